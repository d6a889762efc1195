"""The live progress bar of the verbs: the library's ProgressEvent callbacks on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from paramreuse.cli.common import err, out_console
from paramreuse.cli.progress_lines import ProgressLines, info_text
from paramreuse.progress import ProgressEvent

SPEED_PERIOD = 24 * 3600.0  # seconds of events the bar's ETA averages over: all of a stage (see ProgressBar)


def _a_file(console: Console) -> bool:
    """Whether ``console`` writes to a regular file (``> log``), not a terminal, a pipe or an in-memory stream."""
    try:
        return stat.S_ISREG(os.fstat(console.file.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # io.StringIO and test runners' streams have no file number
        return False


class ProgressBar:
    """The library's ProgressEvent callbacks rendered: a rich bar, one row per stage, on a terminal; plain
    lines (:class:`~paramreuse.cli.progress_lines.ProgressLines`) where the output goes to a file or a pipe.

    The lines go where the results go when that is a regular file (``study ... > log`` logs its progress too,
    and ``> log 2>&1`` gets them once), else to stderr when it is a file or a pipe; ``plain``: force the
    lines (True, on stderr) or the bar (False).

    The bar's ETA averages the whole stage: rich's default (the last 30 s of events) has no speed while
    each event takes longer than that (a best-depth transfer run trains nine candidates), and shows -:--:--.
    """

    def __init__(self, enabled: bool = True, plain: bool | None = None, clock: Callable[[], float] | None = None):
        self.enabled = enabled
        clock = clock or time.monotonic
        logged = plain is None and _a_file(out_console)  # results to a file: progress beside them
        self.plain = (not err.is_terminal) if plain is None else plain
        target = out_console if logged else err
        self.lines = ProgressLines(target, clock=clock) if enabled and (self.plain or logged) else None
        self.plain = self.plain or logged
        self.progress = Progress(
            TextColumn("{task.description:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            disable=not enabled or self.plain,
            speed_estimate_period=SPEED_PERIOD,
            get_time=clock,
        )
        self.tasks: dict[str, int] = {}

    def __enter__(self) -> Self:
        return self  # the bar starts with the first event: an error before it prints no blank line

    def __exit__(self, *exc: object) -> None:
        if self.tasks:
            self.progress.__exit__(*exc)

    def __call__(self, event: ProgressEvent) -> None:
        if self.lines is not None:
            self.lines(event)
            return
        if not self.tasks:
            self.progress.__enter__()
        if event.stage not in self.tasks:
            self.tasks[event.stage] = self.progress.add_task(event.stage, total=event.total, info="")
        self.progress.update(self.tasks[event.stage], completed=event.completed, total=event.total,
                             info=info_text(event.info))  # fmt: skip
