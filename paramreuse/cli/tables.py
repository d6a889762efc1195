"""Results tables that fit the console without splitting a word: long cells break at separators.

Unit names (``layer2.0.downsample.0``), decisions (``reuse-finetuned``) and paths have no spaces
for rich to wrap at; left to rich, a table wider than the console folds them at any character
(``reuse-finetune`` / ``d``). Here the widest columns are narrowed first, and their cells are
broken only after a separator (``.``, ``/``, ``_``, ``-``, ``:``) or at a space, so that every
piece is whole; rich's fold is left for a single piece wider than the console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table

SEPARATED = re.compile(r"[^./_\-:]*[./_\-:]+|[^./_\-:]+")  # pieces, each ending after its separators
NUMBER = re.compile(r"[+-]?\d+(\.\d+)?(e[+-]?\d+)?%?")  # a number is one piece: 0.0412 never breaks at its point
BORDERS = 3  # per column: one padding space each side and one rule
DEFAULT_WIDTH = 80


def pieces(word: str) -> list[str]:
    """A whitespace-free word cut after each separator run; a number stays whole.

    >>> pieces("layer2.0.downsample.0"), pieces("reuse-finetuned"), pieces("-0.0412")
    (['layer2.', '0.', 'downsample.', '0'], ['reuse-', 'finetuned'], ['-0.0412'])
    """
    if NUMBER.fullmatch(word):
        return [word]
    return SEPARATED.findall(word) or [word]


def longest_piece(text: str) -> int:
    """The widest piece of ``text`` (its words cut at separators): the narrowest a column of it can be."""
    return max((len(p) for line in text.splitlines() for word in line.split() for p in pieces(word)), default=0)


def wrap(text: str, width: int) -> str:
    """``text`` in lines of at most ``width``, broken at spaces, else after separators (a piece wider stays whole).

    >>> wrap("layer2.0.downsample.0", 12)
    'layer2.0.\\ndownsample.0'
    >>> wrap("not reusable", 8)
    'not\\nreusable'
    """
    lines: list[str] = []
    for source in text.splitlines() or [""]:
        line = ""
        for word in source.split(" "):
            gap = " " if line else ""
            if len(line) + len(gap) + len(word) <= width:
                line += gap + word
                continue
            if line and len(word) <= width:  # the word fits on a line of its own
                lines.append(line)
                line = word
                continue
            for piece in pieces(word):  # too long for any line: cut it after its separators
                if line and len(line) + len(gap) + len(piece) > width:
                    lines.append(line)
                    line, gap = "", ""
                line += gap + piece
                gap = ""
        lines.append(line)
    return "\n".join(lines)


def fitted_widths(cells: list[list[str]], width: int, per_column: int = BORDERS) -> tuple[list[int], bool]:
    """Column widths within ``width`` (``per_column`` characters of padding and rules each, one more for the
    table's edge): the widest column narrowed first, never below its widest piece; and whether they fit."""
    natural = [max((len(line) for cell in column for line in cell.splitlines()), default=0) for column in cells]
    floor = [max((longest_piece(cell) for cell in column), default=0) for column in cells]
    widths = list(natural)
    while sum(widths) + per_column * len(widths) + 1 > width:
        shrinkable = [i for i, w in enumerate(widths) if w > floor[i]]
        if not shrinkable:
            return widths, False
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths, True


def table(title: str, columns: list[str], rows: list[list[Any]], width: int | None = None, *,
          ruled: box.Box = box.HEAVY_HEAD) -> FittedTable:  # fmt: skip
    """A results table printed in full within the console's width (or ``width``), its cells broken at spaces
    or separators, never inside a word; numbers to four decimals. ``ruled``: the box drawn when it fits."""
    text = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    return FittedTable(title, list(columns), text, width, ruled)


@dataclass(frozen=True)
class FittedTable:
    """A table laid out when it is printed, for the width of the console that prints it (a pipe's 80, a
    terminal's own): see the module doc. A title word longer than the table (a path) breaks after its
    separators too; a table whose narrowest ruled form is still too wide drops its rules and padding
    (one space between columns)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    width: int | None = None
    ruled: box.Box = box.HEAVY_HEAD

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.laid_out(self.width or options.max_width or DEFAULT_WIDTH)

    def laid_out(self, width: int) -> Table:
        """The rich table for ``width`` columns."""
        by_column = [[name, *(row[i] for row in self.rows)] for i, name in enumerate(self.columns)]
        widths, fits = fitted_widths(by_column, width)
        if not fits:
            widths, _ = fitted_widths(by_column, width + 2, per_column=1)
        longest = max((len(word) for word in self.title.split()), default=0)  # rich wraps the title to the table
        t = Table(title=self.title if longest <= width else wrap(self.title, width), title_justify="left",
                  min_width=min(width, longest), box=self.ruled if fits else box.SIMPLE_HEAD,
                  padding=(0, 1) if fits else (0, 0), show_edge=fits)  # fmt: skip
        for i, name in enumerate(self.columns):
            t.add_column(wrap(name, widths[i]), justify="left" if i == 0 else "right", overflow="fold")
        for row in self.rows:
            t.add_row(*[wrap(cell, widths[i]) for i, cell in enumerate(row)])
        return t
