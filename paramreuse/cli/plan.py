"""``paramreuse plan SOURCE TARGET --data NAME``: J1, J2, J3 and the reuse plan."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    QuietOpt,
    SeedOpt,
    ShotsOpt,
    SizeOpt,
    TaskOpt,
    check_length,
    clean_errors,
    emit,
    on_own_cores,
    print_answer,
    print_notes,
    table,
    with_backend,
)  # fmt: skip
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.cli.replace import ALL_PARAMS, ParamsOpt, open_pair, sweep_config
from paramreuse.judge.assess import PLAN_FILE, assess
from paramreuse.judge.crossfit import network_evidence
from paramreuse.judge.verdicts import Thresholds
from paramreuse.report.answer import answer_box
from paramreuse.report.verdict import decision_clause, metric_style, unit_j2
from paramreuse.results import read_json
from paramreuse.training.loop import FEWSHOT, with_length

DEFAULTS = Thresholds()


@with_backend
@clean_errors
@on_own_cores
def plan_command(
    source: Annotated[Path, typer.Argument(help=f"S: {SOURCE_HELP}.")],
    target: Annotated[Path, typer.Argument(help="T (same architecture; other classes get S a fresh head).")],
    data: Annotated[str, typer.Option("--data", help="Target data: its validation split is the evaluation set.")],
    classes: ClassesOpt = None,
    shots: ShotsOpt = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    network_tolerance: Annotated[float | None, typer.Option(help="J1: largest drop (metric units) for which the network counts as reusable; default 0.02, or 0.5 for PSNR in dB.")] = None,
    layer_tolerance: Annotated[float | None, typer.Option(help="J2: largest drop (metric units) for which a unit counts as reusable; default 0.02, or 0.5 for PSNR in dB.")] = None,
    rmse_position: Annotated[float, typer.Option(help="J3: largest rmse/rmse_null for which a unit's kernel counts as reusable.")] = DEFAULTS.rmse_position,
    params: ParamsOpt = ALL_PARAMS,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Naive sweep engine.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="With --shots: passes over the shots in the network "
                      "decision's trainings (default 1; --min-steps may raise it), as study --epochs.",
                      show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="With --shots: exactly N optimiser steps in them "
                     "instead (the cross-fitted folds train half), as study --steps.", show_default=False)] = None,
    min_steps: Annotated[int | None, typer.Option("--min-steps", help="With --shots: raise --epochs until each takes "
                         "at least this many steps; default 150, 0: never; as study --min-steps.",
                         show_default=False)] = None,
    align: AlignOpt = "auto",
    lineage: LineageOpt = None,
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/plan"),
    fmt: FormatOpt = Format.human,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendChoice = BackendChoice(),  # --backend, --address, --cpus-per-job, --gpus-per-job
) -> None:
    """Judge the network (J1), each unit by replacement (J2) and by kernel RMSE (J3), and write a reuse plan.

    Per unit: reuse-frozen, reuse-finetuned or reinit, with the reason. The thresholds used are
    printed and stored in plan.json; each can be overridden.

    With --shots, reuse S at all or train from scratch is decided from the shots as `study` decides
    it: the same seed draws the same shots, trained as long (--epochs, --steps, --min-steps).
    """
    check_length(epochs, steps, min_steps)
    thresholds = Thresholds(network_tolerance, layer_tolerance, rmse_position)
    config = sweep_config(params, False, no_cache, False, layer_tolerance, seed)
    run = open_pair(source, target, arch, data=data, classes=classes, shots=shots, task=task, size=size, seed=seed,
                    data_dir=data_dir, device=device, backend=backend)  # fmt: skip
    pair = run.pair
    with run.executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        network = None
        if shots is not None and thresholds.decides_network:  # reuse S at all? from the shots, cross-fitted
            state = {k: v.detach().cpu() for k, v in pair.source.state_dict().items()}
            training = with_length(FEWSHOT, epochs=epochs, steps=steps, min_steps=min_steps)
            network = network_evidence(arch=pair.arch, state=state, data=run.task, training=training,
                                       seed=seed, device=run.device, progress=bar)  # fmt: skip
        assess(pair.source, pair.target, run.task, out, align=align, lineage=lineage, sweep_config=config,
               thresholds=thresholds, device=run.device, progress=bar, executor=run.executor, inputs=run.inputs,
               network=network)  # fmt: skip
    plan = read_json(out / PLAN_FILE)  # printed as written
    box = answer_box(plan, None, metric_style(plan["metric"]))  # no transfer runs, no model yet: it says how
    emit(plan, fmt, lambda console: (print_notes(console, pair.notes), print_plan(console, plan, out),
                                     print_answer(console, box)), quiet)  # fmt: skip


def print_plan(console, plan: dict, out: Path | None = None) -> None:
    th = plan["thresholds"]
    style = metric_style(plan["metric"])
    console.print(f"Network decision: {decision_clause(plan, style)}.", highlight=False)
    j1 = plan.get("network_j1") or ("reusable" if plan["network_reusable"] else "not reusable")
    console.print(
        f"J1, the paper's network test (reported, decides nothing): all conv kernels of S in T give {plan['metric']} "
        f"{plan['network_value']:.4f} (drop {plan['network_drop']:+.4f}, {plan['network_variant']}) vs baseline "
        f"{plan['baseline']:.4f}: {j1} against the tolerance {th['network_tolerance']}", highlight=False
    )
    rated = any("rate" in layer for layer in plan["layers"])  # plan files before the rate lack it
    rows = [
        [l["name"], "-" if l["drop"] is None else l["drop"], "-" if l["null_position"] is None else l["null_position"],
         unit_j2(l) or "–", "yes" if l["reusable_by_rmse"] else "no", l["decision"]]
        + ([_rate(l.get("rate"))] if rated else [])
        for l in plan["layers"]
    ]  # fmt: skip
    title = (f"Reuse plan (lineage {plan['lineage']}, reusable depth {plan['reusable_depth']}; "
             f"J2 drop <= {th['layer_tolerance']}, J3 rmse/null <= {th['rmse_position']}"
             + ("; rate: learning-rate multiplier while transferring, 0x frozen)" if rated else ")"))  # fmt: skip
    columns = ["unit", "drop", "rmse/null", "J2", "J3", "decision"] + (["rate"] if rated else [])
    console.print(table(title, columns, rows))
    if out is not None:
        console.print(f"written: {out / PLAN_FILE}")


def _rate(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:g}x"
