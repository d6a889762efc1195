"""``paramreuse report RUN_DIR``: re-render the HTML report from the result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paramreuse.cli.common import Format, FormatOpt, QuietOpt, clean_errors, emit, print_answer
from paramreuse.report import FIGURES, SECTIONS, load_run, render_report, run_answer, run_verdict


@clean_errors
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A study's --out folder (holds results.json).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.html and the PNG plots (default: RUN_DIR).")
    ] = None,
    fmt: FormatOpt = Format.human,
    quiet: QuietOpt = False,
) -> None:
    """Re-render RUN_DIR/report.html and its PNG plots from the result files, without recomputing anything."""
    path = render_report(run_dir, out)
    run = load_run(run_dir)
    box = run_answer(run)
    result = {
        "report": str(path),
        "figures": [str(path.parent / f"{name}.png") for name in FIGURES],
        "sections": list(SECTIONS),
        "answer": box.to_dict(),
        "verdict": run_verdict(run),
    }

    def human(console) -> None:
        print_answer(console, box)
        plots = ", ".join(f"{n}.png" for n in FIGURES)
        console.print(f"report: {path}  (plots: {plots} beside it)", highlight=False, markup=False)

    emit(result, fmt, human, quiet)
