"""Progress as plain lines, for a log: what a redirected run prints instead of a live bar.

A live bar needs a terminal; written to a file it shows nothing until the end. Here each stage
prints a line when it starts, when it ends, and in between at most one line every ``every``
seconds: the stage, n/total, the time elapsed in it and the time left at its average rate so
far (known from its second event on).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rich.console import Console

from paramreuse.progress import ProgressEvent

EVERY = 10.0  # seconds between two lines of one stage (its start and end always print)


@dataclass
class _Stage:
    start: float  # when the event before its first one came, or the command started
    printed: float | None = None  # when its last line was printed
    ended: bool = False


def clock_text(seconds: float | None) -> str:
    """``0:03:07``; ``?`` when unknown.

    >>> clock_text(187.4), clock_text(None)
    ('0:03:07', '?')
    """
    if seconds is None:
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def info_text(info: dict) -> str:
    """An event's details as ``key value`` pairs, floats to three decimals."""
    return "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())


class ProgressLines:
    """A progress callback that prints plain, rate-limited lines to ``console`` (see the module doc)."""

    def __init__(self, console: Console, every: float = EVERY, clock: Callable[[], float] = time.monotonic):
        self.console, self.every, self.clock = console, every, clock
        self.stages: dict[str, _Stage] = {}
        self.last = clock()  # the latest event's time

    def __call__(self, event: ProgressEvent) -> None:
        now = self.clock()
        stage = self.stages.get(event.stage)
        if stage is None:
            stage = self.stages[event.stage] = _Stage(self.last)
        self.last = now
        done = event.total > 0 and event.completed >= event.total
        due = stage.printed is None or now - stage.printed >= self.every
        if stage.ended or not (done or due):
            return
        stage.printed, stage.ended = now, done
        self.console.print(self.line(event, stage, now), highlight=False, soft_wrap=True, markup=False)

    @staticmethod
    def line(event: ProgressEvent, stage: _Stage, now: float) -> str:
        """``transfer  12/80  elapsed 0:03:07  eta 0:17:40  run plan 5 shots seed 2``."""
        elapsed = now - stage.start
        left = (event.total - event.completed) * elapsed / event.completed if event.completed > 0 else None
        eta = 0.0 if event.completed >= event.total else left
        parts = [event.stage, f"{event.completed}/{event.total}", f"elapsed {clock_text(elapsed)}", f"eta {clock_text(eta)}"]
        details = info_text(event.info)
        return "  ".join(parts + ([details] if details else []))
