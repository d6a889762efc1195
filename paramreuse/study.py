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

from paramreuse.assess import COMPARISON_FILE, PLAN_FILE, REPLACEMENT_FILE, assess, compare_pair
from paramreuse.data import TaskData
from paramreuse.errors import DataError
from paramreuse.executor import LOCAL, Checkpoint, DataSpec, Executor
from paramreuse.judge import Thresholds
from paramreuse.replace import SweepConfig, SweepInputs
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.runs import MODEL_FILE, RunSpec, environment, run_training, source_for_target
from paramreuse.stats import mean_ci
from paramreuse.train import Progress, TrainConfig, predict
from paramreuse.transfer import plan_decisions
from paramreuse.transfer_runs import FEWSHOT, TRANSFER_FILE, Source, TransferConfig, run_transfer

RESULTS_FILE = "results.json"
SCRATCH_INIT_OFFSET = 10_000
PAIR_FILES = {"target": COMPARISON_FILE, "full": "comparison-full.json", "scratch": "comparison-scratch.json"}


@dataclass(frozen=True)
class DataConfig:
    """One side of the study: data set, classes, how much of it to use, the task and the image size.

    ``task``: classification, segmentation, segmentation-dice or reconstruction; default: the
    data's own (segmentation for data with masks). ``size``: resize images (and masks) to
    ``size`` x ``size`` pixels, e.g. 32 for smp encoders that need sides divisible by 32.
    """

    data: str = "fashion-mnist"
    classes: str = "0-4"
    shots: int | None = None
    limit_per_class: int | None = None
    task: str | None = None
    size: int | None = None

    def spec(self, **options) -> DataSpec:
        """This side's data as :func:`paramreuse.data.load_task` arguments (what remote jobs load)."""
        return DataSpec.of(self.data, classes=self.classes, task=self.task, size=self.size, **options)


@dataclass(frozen=True)
class StudyTraining:
    """Training settings per stage: S on the source, few-shot T and T_scratch, and T_full."""

    source: TrainConfig = TrainConfig(epochs=4, batch_size=128, lr=2e-3)
    fewshot: TrainConfig = FEWSHOT
    full: TrainConfig = TrainConfig(epochs=3, batch_size=128, lr=1e-3)


@dataclass(frozen=True)
class StudyConfig:
    """The default: Fashion-MNIST classes 0-4 as source, classes 5-9 with 10 shots as target."""

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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def quick(config: StudyConfig) -> StudyConfig:
    """A shrunk study: fewer source and full-target images, shorter training, a smaller test set."""
    fewshot = dataclasses.replace(config.training.fewshot, min_steps=min(config.training.fewshot.min_steps, 80))
    return dataclasses.replace(
        config,
        source=dataclasses.replace(config.source, limit_per_class=config.source.limit_per_class or 1000),
        full_limit_per_class=config.full_limit_per_class or 1000,
        test_per_class=config.test_per_class or 400,
        transfer=dataclasses.replace(config.transfer, seeds=min(config.transfer.seeds, 2), training=fewshot),
        training=StudyTraining(
            source=dataclasses.replace(config.training.source, epochs=min(config.training.source.epochs, 3)),
            fewshot=fewshot,
            full=dataclasses.replace(config.training.full, epochs=min(config.training.full.epochs, 2)),
        ),
    )


@dataclass(frozen=True, eq=False)
class StudyData:
    source: TaskData
    target: TaskData
    target_full: TaskData


def _common(config: StudyConfig) -> dict:
    return {"seed": config.seed, "test_per_class": config.test_per_class, "val_per_class": config.val_per_class,
            "data_dir": config.data_dir}  # fmt: skip


def target_spec(config: StudyConfig) -> DataSpec:
    """The study's few-shot target as a spec that remote jobs load (what ``load_study_data`` loads)."""
    return config.target.spec(shots=config.target.shots, limit_per_class=config.target.limit_per_class, **_common(config))


def load_study_data(config: StudyConfig) -> StudyData:
    src = config.source
    source = src.spec(shots=src.shots, limit_per_class=src.limit_per_class, **_common(config)).load()
    target = target_spec(config).load()
    full = config.target.spec(shots=None, limit_per_class=config.full_limit_per_class, **_common(config)).load()
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
    from paramreuse.report import render_report

    out = prepare_out_dir(out)
    start = time.perf_counter()
    data = load_study_data(config)
    tr = config.training
    source_spec = RunSpec(config.arch, tr.source, config.seed)
    source_model, source_rec = run_training(source_spec, data.source, out / "source", device, progress, "source")
    s_path, upstream = str(out / "source" / MODEL_FILE), source_rec["fingerprint"]
    stages = {
        "target": (RunSpec(config.arch, tr.fewshot, config.seed, init=s_path), data.target),
        # A fresh initialisation of its own: T_scratch and S are an independent pair.
        "scratch": (RunSpec(config.arch, tr.fewshot, config.seed, init_seed=config.seed + SCRATCH_INIT_OFFSET), data.target),
        "full": (RunSpec(config.arch, tr.full, config.seed, init=s_path), data.target_full),
    }
    models, records = {"source": source_model}, {"source": source_rec}
    for name, (spec, task_data) in stages.items():
        models[name], records[name] = run_training(spec, task_data, out / name, device, progress, name, upstream)
    key = fingerprint({"models": [r["fingerprint"] for r in records.values()], "config": config.to_dict()})
    files = _assess_study(models, data, config, out, key, device, progress, executor)
    gains = {f"{a}_vs_{b}": paired_gain(models[a], models[b], data.target, device, config.seed)
             for a, b in (("target", "scratch"), ("full", "scratch"))}  # fmt: skip
    transfer = _transfer_study(models["source"], files[PLAN_FILE], config, out, device, progress, executor)
    results = {
        "config": config.to_dict(),
        "metric": records["target"]["metric"],
        "units": records["target"]["units"],
        "tasks": {"source": data.source.kind.name, "target": data.target.kind.name},
        "data": {name: d.describe() for name, d in vars(data).items()},
        "models": {
            name: {
                "path": str(out / name / MODEL_FILE),
                "metric": rec["metric"],
                "test_metric": rec["test_metric"],
                "test_metrics": rec["test_metrics"],
                "val_metric": rec["val_metric"],
                "evaluated_on": "source test" if name == "source" else "target test",
                "train_seconds": rec["training"]["seconds"],
                "resumed": rec["resumed"],
            }
            for name, rec in records.items()
        },
        "gains": gains,
        **_headlines(files, transfer),
        "environment": environment(device),
        "seconds": time.perf_counter() - start,
    }
    write_json(out / RESULTS_FILE, results)
    render_report(out)
    return results


def _headlines(files: dict, transfer: dict) -> dict:
    """The headline numbers of the comparison, sweep, plan and transfer files, with their paths."""
    plan, sweep = files[PLAN_FILE], files[REPLACEMENT_FILE]
    return {
        "comparisons": {
            name: {"file": file, "lineage": files[file]["lineage"], "layers": files[file]["layers"]}
            for name, file in PAIR_FILES.items()
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
            "network_reusable": plan["network_reusable"],
            "network_drop": plan["network_drop"],
            "reusable_depth": plan["reusable_depth"],
            "thresholds": plan["thresholds"],
            "decisions": {layer["name"]: layer["decision"] for layer in plan["layers"]},
        },
        "transfer": {
            "file": f"transfer/{TRANSFER_FILE}",
            "shots": transfer["headline_shots"],
            "seeds": transfer["seeds"],
            "strategies": {k: {"mean": v["mean"], "ci": v["ci"]} for k, v in transfer["strategies"].items()},
            "significance": {k: {"p": v["p"], "test": v["test"]} for k, v in transfer["significance"].items()},
        },
    }


def paired_gain(a: torch.nn.Module, b: torch.nn.Module, data: TaskData, device, seed: int) -> dict:
    """Metric of ``a`` minus metric of ``b`` on the target test set, with a paired bootstrap CI."""
    targets = data.kind.targets(data.test)
    scores = [data.kind.scores(predict(m, data.test, device), targets) for m in (a, b)]
    diffs = scores[0] - scores[1]
    return {"mean": float(diffs.mean()), "ci": mean_ci(diffs, seed=seed), "n": len(diffs),
            "ci_over": "target test images (paired bootstrap); seed-to-seed spread needs several study seeds"}  # fmt: skip


def _transfer_study(source: torch.nn.Module, plan: dict, config: StudyConfig, out: Path, device, progress,
                    executor: Executor = LOCAL) -> dict:  # fmt: skip
    """The plan against the other strategies, on the study's target and shots (transfer/)."""
    tgt = config.target
    shots = config.transfer.shots or (tgt.shots,)
    transfer_config = dataclasses.replace(config.transfer, shots=shots, test_per_class=config.test_per_class)
    source_spec = Source(config.arch, {k: v.detach().cpu() for k, v in source.state_dict().items()})
    return run_transfer(source_spec, plan_decisions(plan), tgt.data, tgt.classes, out / "transfer", transfer_config,
                        device, progress, config.data_dir, headline=tgt.shots, task=tgt.task, size=tgt.size,
                        executor=executor)  # fmt: skip



def _assess_study(models: dict, data: StudyData, config: StudyConfig, out: Path, key: str, device, progress,
                  executor: Executor = LOCAL) -> dict:  # fmt: skip
    """Compare S with T, T_full, T_scratch; sweep and judge S vs T. Loads the files when current."""
    names = [*PAIR_FILES.values(), REPLACEMENT_FILE, PLAN_FILE]
    stored = {name: load_if_current(out / name, key) for name in names}
    if all(v is not None for v in stored.values()):
        return stored
    sweep_config = dataclasses.replace(config.sweep, seed=config.seed)
    source = models["source"]
    if data.target.num_outputs != data.source.num_outputs:  # S's head cannot pair with T's: give it a fresh one
        source = source_for_target(out / "source" / MODEL_FILE, data.target, config.seed)
    t_file = Checkpoint(str(out / "target" / MODEL_FILE), config.arch)
    inputs = SweepInputs(t_file, target_spec(config)) if executor.remote else None
    assess(source, models["target"], data.target, out, config.align, None, sweep_config,
           config.thresholds, device, progress, key=key, executor=executor, inputs=inputs)  # fmt: skip
    for name in ("full", "scratch"):
        compare_pair(source, models[name], data.target, out, config.align, None, config.seed, PAIR_FILES[name], key)
    return {name: load_if_current(out / name, key) for name in names}
