"""``paramreuse replace SOURCE TARGET --data NAME``: replacement sweeps (J1, J2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer

from paramreuse.backends import Checkpoint, Executor
from paramreuse.cli.common import (
    SOURCE_HELP,
    AlignOpt,
    ArchOpt,
    BackendChoice,
    ClassesOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    LineageOpt,
    OutOpt,
    Pair,
    QuietOpt,
    SeedOpt,
    ShotsOpt,
    SizeOpt,
    TaskOpt,
    check_pair_takes,
    clean_errors,
    emit,
    load_models,
    on_own_cores,
    print_notes,
    table,
    target_spec,
    with_backend,
)  # fmt: skip
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.data import TaskData
from paramreuse.devices import resolve_device
from paramreuse.errors import ParamreuseError
from paramreuse.judge.assess import REPLACEMENT_FILE, assess
from paramreuse.judge.replacement import PARAM_GROUPS, SweepConfig, SweepInputs
from paramreuse.results import read_json

ALL_PARAMS = ",".join(PARAM_GROUPS)

ParamsOpt = Annotated[
    str,
    typer.Option("--params", show_default=False,  # the default, a list without spaces, would not fit at 80 columns
                 help=f"Comma-separated parameter groups to sweep per unit: {', '.join(PARAM_GROUPS)} (default: all)."),
]  # fmt: skip
ToleranceOpt = Annotated[float | None, typer.Option("--tolerance", help="Drop (metric units) that separates reusable rows; early stopping uses it. Default 0.02, or 0.5 for PSNR in dB.")]


@dataclass(frozen=True, eq=False)
class PairRun:
    """What ``replace`` and ``plan`` open before they sweep: S and T paired, the target data, the device,
    the executor and, for a remote one, where its workers find the inputs."""

    pair: Pair
    task: TaskData
    device: torch.device
    executor: Executor
    inputs: SweepInputs | None


def open_pair(source: Path, target: Path, arch: str | None, *, data: str, classes, shots, task, size, seed: int,
              data_dir, device: Device, backend: BackendChoice) -> PairRun:  # fmt: skip
    """Load S and T, the target data (checked to fit them) and the executor the options ask for."""
    pair = load_models(source, target, arch, seed=seed)
    spec = target_spec(data, classes, shots, seed, data_dir, task, size, target)
    loaded, dev = spec.load(), resolve_device(device.value)
    check_pair_takes(pair, loaded.val.x[:2], fix="resize the images with --size N")
    executor = backend.open(dev)
    inputs = SweepInputs(Checkpoint(str(target), arch), spec) if executor.remote else None
    return PairRun(pair, loaded, dev, executor, inputs)


def sweep_config(params: str, recalibrate_bn: bool, no_cache: bool, no_adaptive: bool, tolerance: float, seed: int) -> SweepConfig:
    groups = tuple(p.strip() for p in params.split(",") if p.strip())
    unknown = [p for p in groups if p not in PARAM_GROUPS]
    if unknown or not groups:
        raise ParamreuseError(f"unknown parameter group {', '.join(unknown) or '(none)'}; use {', '.join(PARAM_GROUPS)}")
    return SweepConfig(params=groups, recalibrate_bn=recalibrate_bn, cached=not no_cache, adaptive=not no_adaptive,
                       tolerance=tolerance, seed=seed)


@with_backend
@clean_errors
@on_own_cores
def replace_command(
    source: Annotated[Path, typer.Argument(help=f"S: {SOURCE_HELP}.")],
    target: Annotated[Path, typer.Argument(help="T (same architecture; other classes get S a fresh head).")],
    data: Annotated[str, typer.Option("--data", help="Target data: its validation split is the evaluation set.")],
    classes: ClassesOpt = None,
    shots: ShotsOpt = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    params: ParamsOpt = ALL_PARAMS,
    recalibrate_bn: Annotated[bool, typer.Option("--recalibrate-bn", help="Re-estimate BN statistics on target training data in every row.")] = False,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Naive engine: a full forward pass per row.")] = False,
    no_adaptive: Annotated[bool, typer.Option("--no-adaptive", help="Evaluate every row on the whole evaluation set.")] = False,
    tolerance: ToleranceOpt = None,
    align: AlignOpt = "auto",
    lineage: LineageOpt = None,
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/replace"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendChoice = BackendChoice(),  # --backend, --address, --cpus-per-job, --gpus-per-job
) -> None:
    """Put S's values into T, unit by unit and group by group, and measure the drop of T's metric.

    Also the cumulative rows (units 1..k together) and all conv kernels at once (J1), with T's BN
    kept and re-estimated. Each row has a 95% bootstrap CI. Writes replacement.json; an
    interrupted sweep resumes from --out.
    """
    config = sweep_config(params, recalibrate_bn, no_cache, no_adaptive, tolerance, seed)
    run = open_pair(source, target, arch, data=data, classes=classes, shots=shots, task=task, size=size, seed=seed,
                    data_dir=data_dir, device=device, backend=backend)  # fmt: skip
    pair = run.pair
    with run.executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        assess(pair.source, pair.target, run.task, out, align=align, lineage=lineage, sweep_config=config,
               device=run.device, progress=bar, with_plan=False, executor=run.executor, inputs=run.inputs)  # fmt: skip
    sweep = read_json(out / REPLACEMENT_FILE)  # printed as written: findings and lineage included
    emit(sweep, fmt, lambda console: (print_notes(console, pair.notes), print_sweep(console, sweep, out)), quiet)


def print_sweep(console, sweep: dict, out: Path) -> None:
    fmt_ci = lambda r: f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]"  # noqa: E731
    rows = [[r["layer"], r["params"], r["value"], r["drop"], fmt_ci(r), r["n"]] for r in sweep["rows"]]
    rows += [[r["layer"], r["params"], r["value"], r["drop"], fmt_ci(r), r["n"]] for r in sweep["cumulative"]]
    rows += [["all conv", k, r["value"], r["drop"], fmt_ci(r), r["n"]] for k, r in sweep["network"].items()]
    title = f"Replacement of T's values by S's: baseline {sweep['metric']} {sweep['baseline']:.4f}"
    console.print(table(title, ["unit", "params", "value", "drop", "95% CI of drop", "n"], rows))
    timing = sweep["timing"]
    console.print(f"engine {timing['mode']}, adaptive {timing['adaptive']}, {timing['seconds']:.1f} s; written: {out / REPLACEMENT_FILE}")
