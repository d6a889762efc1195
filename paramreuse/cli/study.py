"""``paramreuse study``: the main job, end to end, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from paramreuse.cli.common import (
    LOAD_HINT,
    BackendChoice,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    OutOpt,
    QuietOpt,
    check_length,
    clean_errors,
    emit,
    on_own_cores,
    print_answer,
    table,
    with_backend,
)  # fmt: skip
from paramreuse.cli.plan import print_plan
from paramreuse.cli.progress_bar import ProgressBar
from paramreuse.cli.transfer import print_transfer
from paramreuse.config import load_toml
from paramreuse.devices import resolve_device
from paramreuse.judge.verdicts import holds_text
from paramreuse.report import load_run, run_answer, run_verdict, sides_text
from paramreuse.report.html import MODEL_LABELS
from paramreuse.results import read_json
from paramreuse.study import StudyConfig, quick, run_study


@with_backend
@clean_errors
@on_own_cores
def study_command(
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with StudyConfig keys (see docs/config.md).")] = None,
    quick_run: Annotated[bool, typer.Option("--quick", help="Shrink every stage for a smoke run: 1-2 minutes for "
                                 "28x28 images on 2 idle cores; longer with more classes, larger images or busy "
                                 "cores. Its models may end near chance.")] = False,
    out: OutOpt = Path("runs/study"),
    fmt: FormatOpt = Format.human,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the config's seed.")] = None,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendChoice = BackendChoice(),  # --backend, --address, --cpus-per-job, --gpus-per-job
    source: Annotated[str | None, typer.Option("--source", help="An existing S instead of training one: a paramreuse "
                      "checkpoint, a plain .pt/.pth/.safetensors state dict (with --arch), or a pretrained spec such "
                      "as torchvision:resnet18 with ?weights=DEFAULT.")] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Architecture spec (e.g. builtin:cnn, torchvision:resnet18, "
                    "py:net.py:make); needed with a plain state dict.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Target data set, e.g. folder:PATH or digits.")] = None,
    classes: Annotated[str | None, typer.Option("--classes", help="Target classes: 5-9, 5,6,7 or names.")] = None,
    shots: Annotated[int | None, typer.Option("--shots", help="Labelled target images per class.")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Resize source and target images to SIZE x SIZE pixels.")] = None,
    channels: Annotated[int | None, typer.Option("--channels", help="Convert source and target images to 1 (grey) "
                        "or 3 (RGB) channels, e.g. a grey source with an RGB folder.", show_default=False)] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="Labelled target images the judgements may use: "
                      "'shots' (default: only the shots) or 'validation-set' (a carved validation set too).")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the target shots in every few-shot "
                      "training: T, T_scratch, the plan's evidence and each transfer run (\\[training] epochs). "
                      "--min-steps may raise it. S and T_full: \\[training.source] and \\[training.full] in --config.",
                      show_default=False)] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Exactly N optimiser steps in every few-shot training, "
                     "instead of --epochs; no floor; the plan's cross-fitted folds train half (\\[training] steps).",
                     show_default=False)] = None,
    min_steps: Annotated[int | None, typer.Option("--min-steps", help="Raise --epochs until each few-shot training "
                         "takes at least this many steps; default 150 (--quick 80), 0: never.", show_default=False)] = None,
) -> None:
    """Train S on the source classes (or take --source), make T (fine-tuned), T_scratch and T_full on the
    target, judge which units to reuse, and prove the plan against the strategies a practitioner would use.

    Default: Fashion-MNIST classes 0-4 as source, classes 5-9 with 10 shots per class as target,
    builtin CNN. With --source, S is not trained and the source data are not needed:
    `paramreuse study --source s.pt --arch torchvision:resnet18 --target folder:imgs --shots 10`.
    Re-running with the same --out skips finished stages.

    --epochs, --steps and --min-steps set every few-shot training (T, T_scratch, the plan's evidence, the transfer runs).
    """
    check_length(epochs, steps, min_steps)
    cfg = load_toml(StudyConfig, config) if config else StudyConfig()
    cfg = with_overrides(cfg, source=source, arch=arch, target=target, classes=classes, shots=shots, size=size,
                         budget=budget, channels=channels)  # fmt: skip
    cfg = with_length(cfg, epochs=epochs, steps=steps, min_steps=min_steps)
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if quick_run:
        cfg = quick(cfg)
    dev = resolve_device(device.value)
    executor = backend.open(dev, jobs=cfg.run.jobs)
    with executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        results = run_study(cfg, out, dev, bar, executor)
    emit(results, fmt, lambda console: summary(console, results, out), quiet)


def with_overrides(cfg: StudyConfig, *, source, arch, target, classes, shots, size, budget,
                   channels=None) -> StudyConfig:  # fmt: skip
    """The config with the command line's choices applied (each one only when given)."""
    replace, tgt, src = dataclasses.replace, cfg.target, cfg.source
    if source is not None:  # a given S is not trained: no source data are read
        src = replace(src, checkpoint=source)
    for key, value in (("size", size), ("channels", channels)):  # both sides alike: S's images must pair with T's
        if value is not None:
            src, tgt = replace(src, **{key: value}), replace(tgt, **{key: value})
    tgt = replace(tgt, **{k: v for k, v in (("data", target), ("classes", classes), ("shots", shots)) if v is not None})
    if target is not None and classes is None and target != StudyConfig().target.data:
        tgt = replace(tgt, classes="all")  # another data set: all its classes unless --classes says otherwise
    fields = {k: v for k, v in (("arch", arch), ("budget", budget)) if v is not None}
    return replace(cfg, source=src, target=tgt, **fields)


def with_length(cfg: StudyConfig, *, epochs: int | None, steps: int | None, min_steps: int | None) -> StudyConfig:
    """The few-shot length from the command line over the config file's ([training] epochs, steps,
    min_steps): --steps replaces the file's epochs, --epochs its steps (both flags are refused before)."""
    changes: dict = {"epochs": epochs, "steps": None} if epochs is not None else {}
    changes |= {"steps": steps, "epochs": None} if steps is not None else {}
    changes |= {"min_steps": min_steps} if min_steps is not None else {}
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes)) if changes else cfg


def summary(console, results: dict, out: Path) -> None:
    metric = results["metric"]
    rows = [[MODEL_LABELS.get(n, n), m["evaluated_on"], "–" if m["test_metric"] is None else m["test_metric"]]
            for n, m in results["models"].items()]
    console.print(table("Models", ["model", "evaluated on", f"test {metric}"], rows))
    for side, text in sides_text(results).items():
        console.print(f"{side}: {escape(text)}", highlight=False)
    gain = results["gains"]["target_vs_scratch"]
    console.print(f"T - T_scratch: {gain['mean']:+.4f} {metric} (95% CI {gain['ci'][0]:+.4f} to {gain['ci'][1]:+.4f}, "
                  f"paired bootstrap over {gain['n']} target test images)")  # fmt: skip
    comparisons = results["comparisons"]
    layer_rows = [
        [row["name"], *(comparisons[k]["layers"][i]["rmse_raw"] for k in comparisons), row["rmse_null"]]
        for i, row in enumerate(comparisons["target"]["layers"])
    ]
    lineages = ", ".join(f"{k}: {c['lineage']}" for k, c in comparisons.items())
    console.print(table(f"Raw kernel RMSE to S per unit (lineage {lineages})",
                        ["unit", *(f"S vs {k}" for k in comparisons), "null"], layer_rows))  # fmt: skip
    print_plan(console, read_json(out / results["plan"]["file"]))
    findings = results["replacement"]["findings"]
    console.print(table("Companion paper's parameter-type findings on this pair",
                        ["finding", "holds"], [[f["finding"], holds_text(f["holds"])] for f in findings]))  # fmt: skip
    print_transfer(console, read_json(out / results["transfer"]["file"]))
    note = results.get("training", {}).get("note")
    if note:  # the floor trained the few-shot models longer than asked
        console.print(f"few-shot training (T, T_scratch, transfer runs): {note}", highlight=False)
    for warning in results.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    run = load_run(out)
    console.print(f"[bold]Verdict in full:[/] {escape(run_verdict(run))}", highlight=False)
    model = results.get("model")
    if model:  # the model the verdict recommends, trained on the first seed's shots
        console.print(f"Model: {model['strategy']}, seed {model['seed']}, {model['shots']} shots per class, test "
                      f"{metric} {model['test_metric']:.4f}; {LOAD_HINT}.", highlight=False)  # fmt: skip
    print_answer(console, run_answer(run))  # the answer at a glance, last
    console.print(f"results: {out / 'results.json'}   report: {out / 'report.html'}")
