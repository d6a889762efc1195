"""``paramreuse transfer SOURCE --plan PLAN``: apply the plan and prove (or disprove) the gain."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from paramreuse.backends import RunContext
from paramreuse.cli.common import (
    LOAD_HINT,
    SOURCE_HELP,
    ArchOpt,
    BackendChoice,
    ClassesOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    OutOpt,
    QuietOpt,
    SizeOpt,
    TaskOpt,
    check_length,
    clean_errors,
    emit,
    on_own_cores,
    source_for_data,
    table,
    target_spec,
    with_backend,
)  # fmt: skip
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.config import from_mapping, one_length, read_toml
from paramreuse.devices import resolve_device
from paramreuse.errors import ParamreuseError
from paramreuse.models import read_info
from paramreuse.training.loop import with_length
from paramreuse.transfer.config import TransferConfig
from paramreuse.transfer.grid import TRANSFER_FILE, run_transfer
from paramreuse.transfer.reuse import check_plan, plan_settings
from paramreuse.transfer.strategies import STRATEGIES
from paramreuse.vocabulary import classes_text


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ParamreuseError(f"--{what} must be a comma-separated list of whole numbers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ParamreuseError(f"--{what} needs at least one positive number, got {text!r}")
    return values


@with_backend
@clean_errors
@on_own_cores
def transfer_command(
    source: Annotated[Path, typer.Argument(help=f"S: {SOURCE_HELP}.")],
    data: Annotated[str, typer.Option("--data", help="Target data set.")],
    plan: Annotated[Path | None, typer.Option("--plan", help="plan.json written by `paramreuse plan` or a study; "
                                              "without it the plan rule runs on each run's own shots.")] = None,
    classes: ClassesOpt = None,
    task: TaskOpt = None,
    size: SizeOpt = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML file with TransferConfig keys: "
                           "strategies, shots, seeds, budget, \\[training] (epochs, steps, min_steps, lr, ...), "
                           "\\[thresholds]; the flags override it.")] = None,
    shots: Annotated[str | None, typer.Option("--shots", help="Shots per class, comma-separated (default 5,10,20,50).", show_default=False)] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds per shots value, each drawing its own shots (default 5).", show_default=False)] = None,
    strategies: Annotated[str | None, typer.Option("--strategies", show_default=False, help=f"Comma-separated subset of {', '.join(STRATEGIES)} (default: all).")] = None,
    finetuned_scale: Annotated[float | None, typer.Option(help="Learning-rate scale of a given plan's reuse-finetuned units (default: the plan's finetuned_rate).", show_default=False)] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Labelled images each run may use: 'shots' (default: "
                                               "only its shots; best-depth holds out a fifth of them) or "
                                               "'validation-set' (plus a carved validation set of up to 500 per "
                                               "class, a labelled reference).", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the shots in every run (default 1); "
                      "--min-steps may raise it.", show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Exactly N optimiser steps in every run, instead of "
                     "--epochs; no floor.", show_default=False)] = None,
    min_steps: Annotated[int | None, typer.Option("--min-steps", help="Raise --epochs until each run takes at least "
                         "this many steps; default 150, 0: never.", show_default=False)] = None,
    save: Annotated[str, typer.Option("--save", help="Models to keep, each of the first seed at the first --shots "
                    "value: plan (models/plan.safetensors), all (models/STRATEGY.safetensors for every "
                    "strategy) or none.")] = "plan",
    arch: ArchOpt = None,
    out: OutOpt = Path("runs/transfer"),
    fmt: FormatOpt = Format.human,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendChoice = BackendChoice(),  # --backend, --address, --cpus-per-job, --gpus-per-job
) -> None:
    """Train the target from S as the plan says, against what a practitioner would do anyway.

    Strategies: scratch, finetune-all, linear-probe, lp-ft (linear probe, then fine-tune),
    l2-sp, auto-rgn (surgical fine-tuning by relative gradient norms), plan, and best-depth
    (an oracle: the frozen prefix chosen on held-out labels). Every strategy trains on the same
    shots per seed; transfer.json has means, 95% CIs over seeds and paired t-tests of the plan
    against each baseline. Resumes from --out.

    Keeps the models --save names (first seed, first --shots value) in
    --out/models/; load one with `paramreuse train --init FILE` or
    paramreuse.load_checkpoint(FILE).

    Example: paramreuse transfer runs/S/model.safetensors
    --plan runs/plan/plan.json --data fashion-mnist --classes 5-9
    --shots 10 --seeds 5 --out runs/transfer
    """
    if seeds is not None and seeds < 1:
        raise ParamreuseError(f"--seeds must be at least 1, got {seeds}")
    check_length(epochs, steps, min_steps)
    config = _config(config_file, shots=shots, seeds=seeds, strategies=strategies, finetuned_scale=finetuned_scale,
                     budget=budget, length={"epochs": epochs, "steps": steps, "min_steps": min_steps})  # fmt: skip
    if save not in SAVES:
        raise ParamreuseError(f"--save takes {', '.join(SAVES)}, got {save!r}")
    model, src = source_for_data(source, arch, lambda: target_spec(data, classes, None, 0, data_dir, task, size).load().channels)
    decisions = None
    if plan is not None:  # trained as it says: its fine-tune rate (unless --finetuned-scale) and head warm-up
        decisions, made_with = plan_settings(plan)
        check_plan(model, decisions, str(plan))
        rate = finetuned_scale if finetuned_scale is not None else made_with.finetuned_rate
        config = replace(config, thresholds=made_with, finetuned_scale=rate)
    dev = resolve_device(device.value)
    executor = backend.open(dev)
    with executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        run = RunContext(out, device=dev, progress=bar, executor=executor)
        doc = run_transfer(src, decisions, data, classes, run, config=config, data_dir=data_dir, task=task, size=size,
                           keep={"plan": ("plan",), "all": config.strategies, "none": ()}[save])  # fmt: skip
    asked = epochs is not None or config_file is not None  # the floor's note matters when the user chose a length

    def human(console) -> None:
        print_transfer(console, doc)
        for n, length in doc.get("length", {}).items() if asked else ():
            if length.get("note"):
                console.print(f"{n} shots: {length['note']}", highlight=False)
        print_models(console, doc, out)
        console.print(f"written: {out / TRANSFER_FILE}")

    emit(doc, fmt, human, quiet)


def _config(path: Path | None, *, shots, seeds, strategies, finetuned_scale, budget, length: dict) -> TransferConfig:
    """The --config file's TransferConfig (or the defaults) with every flag that was given over it."""
    config = TransferConfig()
    if path is not None:
        mapping = read_toml(path)
        training = mapping.get("training", {})
        one_length(training.get("epochs"), training.get("steps"), f"{path}.training: ")
        config = from_mapping(TransferConfig, mapping, str(path))
    given: dict = {"seeds": seeds, "finetuned_scale": finetuned_scale, "budget": budget}
    given["shots"] = _ints(shots, "shots") if shots is not None else None
    if strategies is not None:
        names = tuple(s.strip() for s in strategies.split(",") if s.strip())
        unknown = [n for n in names if n not in STRATEGIES]
        if unknown or not names:
            raise ParamreuseError(f"unknown strategy {', '.join(unknown) or '(none)'}; use {', '.join(STRATEGIES)}")
        given["strategies"] = names
    training = with_length(config.training, **length)
    return replace(config, training=training, **{k: v for k, v in given.items() if v is not None})


SAVES = ("plan", "all", "none")


def print_models(console, doc: dict, out: Path) -> None:
    """Where the kept models are, and how to load one."""
    for name, file in doc.get("model_files", {}).items():
        value = read_info(out / file).extra["test_metric"]  # the model's own, as recorded in it
        console.print(f"model ({name}, seed 0, {doc['headline_shots']} shots, test {doc['metric']} {value:.4f}): "
                      f"{out / file}", highlight=False, soft_wrap=True)  # fmt: skip
    if doc.get("model_files"):
        console.print(LOAD_HINT, highlight=False)


def print_transfer(console, doc: dict) -> None:
    shots = doc["shots"]
    rows = []
    for name, entry in doc["strategies"].items():
        cells = [f"{b['mean']:.3f} " + (f"[{b['ci'][0]:.3f}, {b['ci'][1]:.3f}]" if b.get("ci") else "(no CI: not enough seeds)")
                 for b in (entry["by_shots"][str(n)] for n in shots)]  # fmt: skip
        rows.append([f"{name} (oracle)" if entry.get("oracle") else name, *cells])
    on = f" on {doc['data']} classes {classes_text(doc['class_ids'], doc['class_names'])}" if "class_ids" in doc else ""
    title = f"Target test {doc['metric']}{on} after training on the shots: mean [95% CI over {doc['seeds']} seeds]"
    console.print(table(title, ["strategy", *(f"{n} shots" for n in shots)], rows))
    for key, sig in doc["significance"].items():
        ps = ", ".join(
            f"{n} shots: diff {b['mean_diff']:+.3f}, " + (f"p {b['p']:.2g}" if b["p"] is not None else b["test"])
            for n, b in ((n, sig["by_shots"][str(n)]) for n in shots)
        )
        console.print(f"{key}: {ps}" if sig["p"] is None else f"{key} ({sig['test']}): {ps}")
    plan = doc["strategies"].get("plan", {}).get("by_shots", {})
    made = [(n, plan[str(n)]["network"]) for n in shots if "network" in plan.get(str(n), {})]
    if made:  # the plan made from each draw's shots: how often it reused S
        console.print("plan's network decision per draw: " + "; ".join(
            f"{n} shots: reuse S on {choices.count('reuse')} of {len(choices)}, scratch on {choices.count('scratch')}"
            for n, choices in made), highlight=False)  # fmt: skip
