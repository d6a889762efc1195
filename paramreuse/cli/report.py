"""``paramreuse report RUN_DIR``: re-render the HTML report from the result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paramreuse.cli.common import Format, FormatOpt, clean_errors, emit
from paramreuse.report import render_report


@clean_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A study's --out folder (holds results.json).")],
    fmt: FormatOpt = Format.human,
) -> None:
    """Re-render RUN_DIR/report.html from the result files, without recomputing anything."""
    path = render_report(run_dir)
    emit({"report": str(path)}, fmt, lambda console: console.print(f"report: {path}"))
