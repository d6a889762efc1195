"""Progress of long work, reported through a callback: the library never imports rich; the CLI renders it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProgressEvent:
    """One tick of long work; the CLI renders these, the library never imports rich."""

    stage: str
    completed: int
    total: int
    info: dict = field(default_factory=dict)


Progress = Callable[[ProgressEvent], None]
