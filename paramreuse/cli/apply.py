"""``paramreuse apply PLAN --source S --data ...``: train the target from S as a plan says, and keep the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paramreuse.cli.common import (
    SOURCE_HELP,
    ArchOpt,
    ClassesOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    OutOpt,
    QuietOpt,
    SeedOpt,
    SizeOpt,
    TaskOpt,
    clean_errors,
    emit,
    on_own_cores,
    print_model,
    source_for_data,
)  # fmt: skip
from paramreuse.data import load_task
from paramreuse.devices import resolve_device
from paramreuse.transfer.reuse import MODEL_RECORD, check_plan, load_plan, train_with_plan
from paramreuse.vocabulary import Budget


@clean_errors
@on_own_cores
def apply_command(
    plan: Annotated[Path, typer.Argument(help="plan.json written by `paramreuse plan` or a study.")],
    source: Annotated[str, typer.Option("--source", help=f"S: {SOURCE_HELP}.")],
    data: Annotated[str, typer.Option("--data", help="Your data: fashion-mnist, digits, folder:PATH, "
                                      "segfolder:PATH, ...")],
    classes: ClassesOpt = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Training images per class (default: all).")] = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/apply"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Train a target from S as a plan says, on your data, and write the model.

    S's units are copied, frozen, fine-tuned or re-initialised as plan.json
    says (a plan that trains from scratch re-initialises them all); the head
    is fresh; training is the few-shot recipe of `paramreuse transfer`.
    --out gets model.safetensors and model.json (its test metric and the plan
    it followed). Load the model with `paramreuse train --init FILE` or
    paramreuse.load_checkpoint(FILE). A re-run with the same inputs and --out
    loads the model instead of training it again.

    Example: paramreuse apply runs/study/plan.json
    --source runs/study/source/model.safetensors
    --data fashion-mnist --classes 5-9 --shots 10 --out runs/apply
    """
    followed = load_plan(plan)
    target = load_task(data, classes, shots, seed=seed, data_dir=data_dir, task=task, size=size,
                       **Budget.SHOTS.data_options)  # fmt: skip
    model, src = source_for_data(source, arch, lambda: target.channels)
    check_plan(model, followed.decisions(), str(plan))
    record = train_with_plan(src, target, followed, out, seed=seed, device=resolve_device(device.value))

    def human(console) -> None:
        status = "loaded from" if record["resumed"] else "written to"
        console.print(f"plan {plan} ({record['decision']}): test {record['metric']} {record['test_metric']:.4f}",
                      highlight=False, soft_wrap=True)  # fmt: skip
        console.print(f"described in {out / MODEL_RECORD}", highlight=False, soft_wrap=True)
        print_model(console, f"model {status}", out / record["model"])

    emit(record, fmt, human, quiet)
