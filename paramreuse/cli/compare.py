"""``paramreuse compare SOURCE TARGET``: per-unit kernel distances, lineage and alignment (J3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer

from paramreuse.cli.common import (
    SOURCE_HELP,
    AlignOpt,
    ArchOpt,
    ClassesOpt,
    DataDirOpt,
    Format,
    FormatOpt,
    InputSizeOpt,
    LineageOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SizeOpt,
    TaskOpt,
    check_pair_takes,
    clean_errors,
    emit,
    layer_table,
    load_models,
    on_own_cores,
    print_notes,
    target_data,
)  # fmt: skip
from paramreuse.judge.assess import COMPARISON_FILE, compare_pair
from paramreuse.results import read_json, units_aligned_text


@clean_errors
@on_own_cores
def compare_command(
    source: Annotated[Path, typer.Argument(help=f"S (the source network): {SOURCE_HELP}.")],
    target: Annotated[Path, typer.Argument(help="T (same architecture; other classes get S a fresh head).")],
    align: AlignOpt = "auto",
    lineage: LineageOpt = None,
    data: Annotated[str | None, typer.Option("--data", help="Target data for activation matching.")] = None,
    classes: ClassesOpt = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    arch: ArchOpt = None,
    input_size: InputSizeOpt = None,
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
    pair = load_models(source, target, arch, seed=seed, input_size=input_size)
    task = target_data(data, classes, None, seed, data_dir, task, size, target) if data else None
    if task is not None:
        check_pair_takes(pair, task.val.x[:2], fix="resize the images with --size N")
        example = None  # the data give alignment the image size
    else:
        # without data, an input of the recorded (or --input-size) size tells alignment the image size
        example = torch.zeros(2, pair.channels, *pair.input_size)
        check_pair_takes(pair, example, fix="pass --input-size H,W (the size the network was trained on)")
    compare_pair(pair.source, pair.target, task, out, align=align, lineage=lineage, seed=seed, example=example)
    result = read_json(out / COMPARISON_FILE)  # printed as written

    def human(console) -> None:
        print_notes(console, pair.notes)
        console.print(layer_table(result))
        for line in alignment_summary(result):
            console.print(line, highlight=False, markup=False)
        console.print(f"lineage rule: {result['lineage_rule']}")
        console.print(f"written: {out / COMPARISON_FILE}")

    emit(result, fmt, human, quiet)


def alignment_summary(comparison: dict) -> list[str]:
    """What alignment did, for under the table: how many units it aligned and its note (older files: nothing)."""
    alignment = comparison.get("alignment") or {}
    count = units_aligned_text(alignment)
    return ([count] if count else []) + ([f"alignment: {alignment['note']}"] if alignment.get("note") else [])
