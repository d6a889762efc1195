"""``paramreuse compare SOURCE TARGET``: per-unit kernel distances, lineage and alignment (J3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paramreuse.assess import COMPARISON_FILE, compare_pair
from paramreuse.cli.common import (
    AlignOpt, ArchOpt, ClassesOpt, DataDirOpt, Format, FormatOpt, LineageOpt, OutOpt, QuietOpt, SeedOpt,
    SizeOpt, TaskOpt, clean_errors, emit, layer_table, load_models, target_data,
)  # fmt: skip
from paramreuse.results import read_json


@clean_errors
def compare_command(
    source: Annotated[Path, typer.Argument(help="Checkpoint of S (the source network).")],
    target: Annotated[Path, typer.Argument(help="Checkpoint of T (same architecture).")],
    align: AlignOpt = "auto",
    lineage: LineageOpt = None,
    data: Annotated[str | None, typer.Option("--data", help="Target data for activation matching.")] = None,
    classes: ClassesOpt = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/compare"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare S's parameters with T's unit by unit: raw, aligned and normalised RMSE, and the random-init null.

    Independent pairs are permutation-aligned first (--align auto); the lineage rule is printed.
    Writes comparison.json to --out.
    """
    s, t = load_models(source, target, arch)
    task = target_data(data, classes, None, seed, data_dir, task, size, target) if data else None
    compare_pair(s, t, task, out, align, lineage, seed)
    result = read_json(out / COMPARISON_FILE)  # printed as written

    def human(console) -> None:
        console.print(layer_table(result))
        console.print(f"lineage rule: {result['lineage_rule']}")
        console.print(f"written: {out / COMPARISON_FILE}")

    emit(result, fmt, human, quiet)
