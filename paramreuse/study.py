"""The main job: train S, make T, T_scratch and T_full, compare them, write results and a report.

Each stage persists its result as it completes; running the study again loads finished
stages (same configuration fingerprint) instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from paramreuse.align.matching import METHODS
from paramreuse.backends import LOCAL, Checkpoint, DataSpec, Executor, RunContext
from paramreuse.config import ConfigError, check_at_least, check_choice
from paramreuse.data import TaskData
from paramreuse.errors import DataError
from paramreuse.judge.assess import COMPARISON_FILE, PLAN_FILE, REPLACEMENT_FILE, assess, compare_pair
from paramreuse.judge.caveats import chance_warnings, validation_caveat
from paramreuse.judge.crossfit import crossfit_sweep, network_evidence
from paramreuse.judge.plan import Plan
from paramreuse.judge.replacement import SweepConfig, SweepInputs
from paramreuse.judge.verdicts import Thresholds
from paramreuse.models.heads import head_size
from paramreuse.models.loading import recorded_arch
from paramreuse.progress import Progress
from paramreuse.report import render_report
from paramreuse.report.verdict import metric_style, recommended_strategy
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.tasks import TASKS
from paramreuse.training.loop import TrainConfig, paired_gain, with_length
from paramreuse.training.run import (
    FRESH_INIT_OFFSET,
    MODEL_FILE,
    RunSpec,
    adopt_source,
    environment,
    run_training,
    source_for_target,
)
from paramreuse.transfer.grid import FEWSHOT, TRANSFER_FILE, Source, TransferConfig, run_transfer
from paramreuse.transfer.reuse import publish_model
from paramreuse.vocabulary import BUDGETS, Budget

RESULTS_FILE = "results.json"
ALIGNMENTS = ("auto", *METHODS)
PAIR_FILES = {"target": COMPARISON_FILE, "full": "comparison-full.json", "scratch": "comparison-scratch.json"}


@dataclass(frozen=True)
class DataConfig:
    """One side of the study: data set, classes, how much of it to use, the task and the image size.

    ``task``: classification, segmentation, segmentation-dice or reconstruction; default: the
    data's own (segmentation for data with masks). ``size``: resize images (and masks) to
    ``size`` x ``size`` pixels, e.g. 32 for smp encoders that need sides divisible by 32.
    """

    data: str | None = "fashion-mnist"
    classes: str = "0-4"
    shots: int | None = None
    limit_per_class: int | None = None
    task: str | None = None
    size: int | None = None
    checkpoint: str | None = None  # [source] only: an existing S (file or pretrained spec); not trained, no data read

    def __post_init__(self) -> None:
        if self.task is not None:
            check_choice("task", self.task, tuple(TASKS))
        check_at_least(self, ("shots", "limit_per_class", "size"), 1)

    def spec(self, **options) -> DataSpec:
        """This side's data as :func:`paramreuse.data.load_task` arguments (what remote jobs load)."""
        return DataSpec.of(self.data, classes=self.classes, task=self.task, size=self.size, **options)


@dataclass(frozen=True)
class StudyTraining:
    """Training settings per stage: S on the source, few-shot T and T_scratch, and T_full.

    ``epochs``, ``steps`` and ``min_steps`` (the ``[training]`` table's own keys; ``--epochs``,
    ``--steps``, ``--min-steps``) set the length of every few-shot training on the target shots:
    T, T_scratch, the cross-fitted evidence of the plan and every transfer run. ``epochs`` counts
    passes over the shots and ``min_steps`` may raise it; ``steps`` is the exact number of
    optimiser steps. Unset, each keeps its table's ([training.fewshot], [transfer.training]).
    S and T_full keep [training.source] and [training.full].
    """

    source: TrainConfig = TrainConfig(epochs=4, batch_size=128, lr=2e-3)
    fewshot: TrainConfig = FEWSHOT
    full: TrainConfig = TrainConfig(epochs=3, batch_size=128, lr=1e-3)
    epochs: int | None = None
    steps: int | None = None
    min_steps: int | None = None

    def __post_init__(self) -> None:
        check_at_least(self, ("epochs", "steps"), 1)
        check_at_least(self, ("min_steps",), 0)
        if self.epochs is not None and self.steps is not None:
            raise ConfigError(f"epochs ({self.epochs}) and steps ({self.steps}) are both set; give one: epochs "
                              "counts passes over the shots (min_steps may raise it), steps exact optimiser steps")

    def to_dict(self) -> dict:
        """The fields; the length keys only when set (older run folders' fingerprints stay valid)."""
        stages = {name: getattr(self, name).to_dict() for name in ("source", "fewshot", "full")}
        return stages | {k: v for k, v in self.asked().items() if v is not None}

    def asked(self) -> dict:
        """The target trainings' length as the user set it (None: not set)."""
        return {"epochs": self.epochs, "steps": self.steps, "min_steps": self.min_steps}

    def applied(self, config: TrainConfig) -> TrainConfig:
        """A few-shot training ``config`` with the asked length, when one is set."""
        return with_length(config, **self.asked())


@dataclass(frozen=True)
class StudyConfig:
    """The default: Fashion-MNIST classes 0-4 as source, classes 5-9 with 10 shots as target.

    ``budget``: the labelled target images every judgement may use. ``shots`` (default): only
    the target shots; T is judged by cross-fitting on them and the transfer grid makes the plan
    from each run's shots. ``validation-set``: plus a carved validation set (10% of each class,
    up to 500 images), far more labels than a few-shot user has; a labelled reference.
    """

    arch: str = "builtin:cnn"
    seed: int = 0
    source: DataConfig = DataConfig(classes="0-4")
    target: DataConfig = DataConfig(classes="5-9", shots=10)
    full_limit_per_class: int | None = None
    test_per_class: int | None = None
    val_per_class: int | None = None
    data_dir: str | None = None
    align: str = "auto"
    training: StudyTraining = field(default_factory=StudyTraining)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    transfer: TransferConfig = field(default_factory=lambda: TransferConfig(shots=(), seeds=5))
    budget: str = "shots"

    def __post_init__(self) -> None:
        check_choice("budget", self.budget, BUDGETS)
        check_choice("align", self.align, ALIGNMENTS)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"training": self.training.to_dict(), "transfer": self.transfer.to_dict()}


def quick(config: StudyConfig) -> StudyConfig:
    """A shrunk study: fewer source and full-target images, shorter training, a smaller test set."""
    fewshot = dataclasses.replace(config.training.fewshot, min_steps=min(config.training.fewshot.min_steps, 80))
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, limit_per_class=config.source.limit_per_class or 1000),
        full_limit_per_class=config.full_limit_per_class or 1000,
        test_per_class=config.test_per_class or 400,
        transfer=dataclasses.replace(config.transfer, seeds=min(config.transfer.seeds, 2), training=fewshot),
        training=dataclasses.replace(
            config.training,
            source=dataclasses.replace(config.training.source, epochs=min(config.training.source.epochs, 3)),
            fewshot=fewshot,
            full=dataclasses.replace(config.training.full, epochs=min(config.training.full.epochs, 2)),
        ),
    )


def apply_length(config: StudyConfig) -> StudyConfig:
    """The config with ``[training]``'s asked length applied to every few-shot training (T, T_scratch, transfer)."""
    tr = config.training
    transfer = dataclasses.replace(config.transfer, training=tr.applied(config.transfer.training))
    return dataclasses.replace(config, training=dataclasses.replace(tr, fewshot=tr.applied(tr.fewshot)), transfer=transfer)


@dataclass(frozen=True, eq=False)
class StudyData:
    source: TaskData | None  # None when S is given (``source.checkpoint``) without source data
    target: TaskData
    target_full: TaskData


def _common(config: StudyConfig) -> dict:
    return {"seed": config.seed, "test_per_class": config.test_per_class, "val_per_class": config.val_per_class,
            "data_dir": config.data_dir}  # fmt: skip


def target_spec(config: StudyConfig) -> DataSpec:
    """The study's few-shot target as a spec that remote jobs load (what ``load_study_data`` loads).

    With the shots budget the target has no validation set: only the shots are labelled.
    """
    common = _common(config) | Budget(config.budget).data_options
    return config.target.spec(shots=config.target.shots, limit_per_class=config.target.limit_per_class, **common)


def load_study_data(config: StudyConfig) -> StudyData:
    src = config.source
    target = target_spec(config).load()
    full = config.target.spec(shots=None, limit_per_class=config.full_limit_per_class, **_common(config)).load()
    if src.checkpoint is not None:  # S is given: it is not trained, so no source data are needed
        return StudyData(None, target, full)
    if not src.data:
        raise ConfigError("[source] needs data (a data set to train S on) or checkpoint (an existing S); give one")
    source = src.spec(shots=src.shots, limit_per_class=src.limit_per_class, **_common(config)).load()
    if source.channels != target.channels or source.size != target.size:
        raise DataError(
            f"source images are {source.channels}x{source.size[0]}x{source.size[1]} but target images are "
            f"{target.channels}x{target.size[0]}x{target.size[1]}; set the same size in [source] and [target]"
        )
    return StudyData(source, target, full)


def run_study(
    config: StudyConfig,
    out: str | Path,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    executor: Executor = LOCAL,
) -> dict:
    """Run (or resume) the whole study in ``out``; returns the content of ``results.json``.

    ``executor`` runs the independent jobs: the sweep's rows and the transfer grid's runs.
    """
    out = prepare_out_dir(out)
    run = RunContext(out, device, progress, executor)
    start = time.perf_counter()
    config = apply_length(config)
    data = load_study_data(config)
    tr = config.training
    if config.source.checkpoint is not None:
        # A model that records its architecture keeps it (T is made of S's): the default --arch is no choice
        # of the user's, and another --arch is an error saying which to pass.
        given = config.source.checkpoint
        arch = None if recorded_arch(given) and config.arch == StudyConfig.arch else config.arch
        source_model, source_rec = adopt_source(given, arch, data.target, out / "source", seed=config.seed)
        config = dataclasses.replace(config, arch=source_rec["arch"])
    else:
        source_spec = RunSpec(config.arch, tr.source, config.seed)
        source_model, source_rec = run_training(source_spec, data.source, out / "source", device, progress=progress, stage="source")
    s_path, upstream = str(out / "source" / MODEL_FILE), source_rec["fingerprint"]
    stages = {
        "target": (RunSpec(config.arch, tr.fewshot, config.seed, init=s_path), data.target),
        # A fresh initialisation of its own: T_scratch and S are an independent pair.
        "scratch": (RunSpec(config.arch, tr.fewshot, config.seed, init_seed=config.seed + FRESH_INIT_OFFSET), data.target),
        "full": (RunSpec(config.arch, tr.full, config.seed, init=s_path), data.target_full),
    }
    models, records = {"source": source_model}, {"source": source_rec}
    for name, (spec, task_data) in stages.items():
        models[name], records[name] = run_training(spec, task_data, out / name, device, progress=progress, stage=name,
                                                   upstream=upstream)
    key = fingerprint({"models": [r["fingerprint"] for r in records.values()], "config": config.to_dict()})
    evidence = _assess_study(models, data, config, run.keyed(key))
    gains = {f"{a}_vs_{b}": paired_gain(models[a], models[b], data.target, device, config.seed)
             for a, b in (("target", "scratch"), ("full", "scratch"))}  # fmt: skip
    transfer = transfer_study(models["source"], config, run)
    transfer, model = recommended_model(models["source"], config, run, transfer, records)
    results = {
        "config": config.to_dict(),
        "metric": records["target"]["metric"],
        "units": records["target"]["units"],
        "tasks": {"source": (data.source or data.target).kind.name, "target": data.target.kind.name},
        "data": {name: d.describe() for name, d in vars(data).items() if d is not None},
        "models": {
            name: {
                "path": str(out / name / MODEL_FILE),
                "metric": rec["metric"],
                "test_metric": rec["test_metric"],
                "test_metrics": rec["test_metrics"],
                "val_metric": rec["val_metric"],
                "evaluated_on": ("source test" if rec["test_metric"] is not None else "not evaluated (given S, no source data)")
                if name == "source" else "target test",
                "train_seconds": rec["training"]["seconds"],
                "resumed": rec["resumed"],
                **({"given": rec["given"], "given_model": rec.get("given_model", {})} if "given" in rec else {}),
            }
            for name, rec in records.items()
        },
        "gains": gains,
        "training": training_length(config, records),
        "model": {"path": str(out / MODEL_FILE)} | {k: model[k] for k in ("strategy", "why", "metric", "test_metric",
                                                                          "shots", "seed")},
        "warnings": caveats(config, data, records, transfer),
        **_headlines(evidence, transfer),
        "environment": environment(device),
        "seconds": time.perf_counter() - start,
    }
    write_json(out / RESULTS_FILE, results)
    render_report(out)
    return results


@dataclass(frozen=True, eq=False)
class Evidence:
    """What the study judged from: the three comparisons and the sweep (their result documents) and the plan."""

    comparisons: dict[str, dict]  # pair name -> comparison.json content
    sweep: dict  # replacement.json content
    plan: Plan


def _headlines(evidence: Evidence, transfer: dict) -> dict:
    """The headline numbers of the comparisons, sweep, plan and transfer, with their files."""
    plan, sweep = evidence.plan, evidence.sweep
    return {
        "comparisons": {
            name: {"file": PAIR_FILES[name], "lineage": doc["lineage"], "layers": doc["layers"]}
            for name, doc in evidence.comparisons.items()
        },
        "replacement": {
            "file": REPLACEMENT_FILE,
            "baseline": sweep["baseline"],
            "network": sweep["network"],
            "seconds": sweep["timing"]["seconds"],
            "findings": sweep["findings"],
        },
        "plan": {
            "file": PLAN_FILE,
            "decision": "reuse" if plan.reuses else "scratch",
            "network": plan.network.to_dict() if plan.network else None,
            "network_reusable": plan.network_reusable,
            "network_drop": plan.network_drop,
            "reusable_depth": plan.reusable_depth,
            "thresholds": plan.thresholds.to_dict(),
            "decisions": plan.decisions(),
        },
        "transfer": {
            "file": f"transfer/{TRANSFER_FILE}",
            "shots": transfer["headline_shots"],
            "seeds": transfer["seeds"],
            "strategies": {k: {"mean": v["mean"], "ci": v["ci"]} for k, v in transfer["strategies"].items()},
            "significance": {k: {"p": v["p"], "test": v["test"]} for k, v in transfer["significance"].items()},
        },
    }


def training_length(config: StudyConfig, records: dict) -> dict:
    """The few-shot trainings' length: as asked ([training], --epochs/--steps), as T trained, and a
    ``note`` when the floor (min_steps) raised the asked epochs."""
    done = records["target"]["training"]
    asked = config.training.asked()
    raised = asked["epochs"] is not None and done.get("note")
    return {"asked": asked, "epochs": done.get("epochs"), "steps": done.get("steps"), "note": raised or None}


def caveats(config: StudyConfig, data: StudyData, records: dict, transfer: dict) -> list[str]:
    """What limits the study's verdicts: too few images to judge the tolerance, every model at chance."""
    target = data.target
    tolerance = config.thresholds.for_task(target.kind).layer_tolerance
    judged = target.train if config.budget == Budget.SHOTS else target.val
    what = "cross-fitted evaluation set (the shots)" if config.budget == Budget.SHOTS else "validation set"
    found = [validation_caveat(len(judged), tolerance, metric=target.kind.metric_name, units=target.kind.units, what=what)]
    metrics = {name: records[name]["test_metric"] for name in ("source", "target", "scratch", "full")}
    strategies = {name: entry["mean"] for name, entry in transfer["strategies"].items()}
    found += chance_warnings(data.source, target, metrics, strategies, seeds=transfer["seeds"])
    return [w for w in found if w]


def transfer_study(source: torch.nn.Module, config: StudyConfig, run: RunContext, keep: tuple[str, ...] = ("plan",)) -> dict:
    """The plan rule against the other strategies, on the study's target and shots (transfer/); each run
    makes its plan from its own shots, so plan.json is the plan for the study's own draw. The models of
    ``keep`` (first seed) are kept in transfer/models/."""
    tgt = config.target
    shots = config.transfer.shots or (tgt.shots,)
    transfer_config = dataclasses.replace(config.transfer, shots=shots, test_per_class=config.test_per_class,
                                          budget=config.budget, thresholds=config.thresholds)  # fmt: skip
    source_spec = Source(config.arch, {k: v.detach().cpu() for k, v in source.state_dict().items()})
    # No fixed plan: each run makes the plan from its own shots, as a user following the tool would.
    return run_transfer(source_spec, None, tgt.data, tgt.classes, run.under("transfer"), config=transfer_config,
                        data_dir=config.data_dir, headline=tgt.shots, task=tgt.task, size=tgt.size, keep=keep)  # fmt: skip


def recommended_model(source: torch.nn.Module, config: StudyConfig, run: RunContext, transfer: dict,
                      records: dict) -> tuple[dict, dict]:  # fmt: skip
    """The model the verdict recommends (the plan's, or the strategy the proof says to use instead), first
    seed, written to ``model.safetensors`` and ``model.json`` in the study's folder; the transfer document
    (with that model kept) and ``model.json``."""
    values = [r["test_metric"] for r in records.values() if r["test_metric"] is not None]
    style = metric_style(records["target"]["metric"], values, records["target"]["units"])
    chosen = recommended_strategy(transfer, style)
    why = "the plan, trained as it says" if chosen == "plan" else f"the study's own proof puts the plan clearly below {chosen}"
    if chosen not in transfer["model_files"]:  # kept now: only its first seed's run is trained again
        transfer = transfer_study(source, config, run, keep=("plan", chosen))
    return transfer, publish_model(run.out / "transfer", transfer, chosen, run.out, why=why)



def _assess_study(models: dict, data: StudyData, config: StudyConfig, run: RunContext) -> Evidence:
    """Compare S with T, T_full, T_scratch; sweep and judge S vs T. Loads the files when current."""
    out, key, device, progress, executor = run.out, run.key, run.device, run.progress, run.executor
    names = [*PAIR_FILES.values(), REPLACEMENT_FILE, PLAN_FILE]
    stored = {name: load_if_current(out / name, key) for name in names}
    if all(v is not None for v in stored.values()):
        return Evidence({pair: stored[file] for pair, file in PAIR_FILES.items()}, stored[REPLACEMENT_FILE],
                        Plan.from_dict(stored[PLAN_FILE]))  # fmt: skip
    thresholds = config.thresholds.for_task(data.target.kind)
    # One threshold, one place: the sweep's early stopping and findings use the judged tolerance.
    sweep_config = dataclasses.replace(config.sweep, seed=config.seed, tolerance=thresholds.layer_tolerance)
    source = models["source"]
    if data.target.num_outputs != head_size(source):  # S's head cannot pair with T's: give it a fresh one
        source = source_for_target(out / "source" / MODEL_FILE, data.target, config.seed)
    t_file = Checkpoint(str(out / "target" / MODEL_FILE), config.arch)
    inputs = SweepInputs(t_file, target_spec(config)) if executor.remote else None
    sweep, network = None, None
    state = {k: v.detach().cpu() for k, v in models["source"].state_dict().items()}
    if config.budget == Budget.SHOTS:  # the network decision's evidence comes with the cross-fitted sweep
        sweep = crossfit_sweep(arch=config.arch, state=state, data=data.target, config=sweep_config,
                               training=config.training.fewshot, seed=config.seed, device=device, progress=progress,
                               log_dir=out, fresh=thresholds.decides_network)  # fmt: skip
    elif thresholds.decides_network:  # judged on the validation set; the network decision still from the shots
        network = network_evidence(arch=config.arch, state=state, data=data.target, training=config.training.fewshot,
                                   seed=config.seed, device=device, progress=progress)  # fmt: skip
    judged = assess(source, models["target"], data.target, out, align=config.align, sweep_config=sweep_config,
                    thresholds=thresholds, device=device, progress=progress, key=key, executor=executor, inputs=inputs,
                    sweep=sweep, network=network)  # fmt: skip
    comparisons = {"target": judged.comparison.to_dict()}
    for name in ("full", "scratch"):
        pair = compare_pair(source, models[name], data.target, out, align=config.align, seed=config.seed,
                            file=PAIR_FILES[name], key=key)
        comparisons[name] = pair.to_dict()
    return Evidence(comparisons, judged.sweep_document, judged.plan)
