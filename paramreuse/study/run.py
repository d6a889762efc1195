"""The study's stages: train S (or adopt a given one), make T, T_scratch and T_full, compare them,
make the plan from the shots, prove it, write results, the report and the recommended model.

Each stage persists its result as it completes; running the study again loads finished
stages (same configuration fingerprint) instead of recomputing them.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from paramreuse.backends import LOCAL, Checkpoint, Executor, RunContext
from paramreuse.cores import take_turn
from paramreuse.judge.assess import COMPARISON_FILE, PLAN_FILE, REPLACEMENT_FILE, assess, compare_pair
from paramreuse.judge.caveats import chance_warnings, short_training_warnings, validation_caveat
from paramreuse.judge.crossfit import crossfit_sweep, network_evidence
from paramreuse.judge.plan import Plan
from paramreuse.judge.replacement import SweepInputs
from paramreuse.models.heads import head_size
from paramreuse.models.loading import recorded_arch
from paramreuse.progress import Progress
from paramreuse.report import answer_box, render_report
from paramreuse.report.verdict import metric_style, recommended_strategy
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, read_json, write_json
from paramreuse.study.config import StudyConfig, StudyData, apply_length, full_length, load_study_data, target_spec
from paramreuse.training.loop import paired_gain
from paramreuse.training.run import (
    FRESH_INIT_OFFSET,
    MODEL_FILE,
    RunSpec,
    adopt_source,
    environment,
    run_training,
    source_for_target,
)
from paramreuse.transfer.config import Source
from paramreuse.transfer.grid import TRANSFER_FILE, run_transfer
from paramreuse.transfer.reuse import publish_model
from paramreuse.vocabulary import Budget

RESULTS_FILE = "results.json"
PAIR_FILES = {"target": COMPARISON_FILE, "full": "comparison-full.json", "scratch": "comparison-scratch.json"}


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
        # At least the few-shot trainings' steps: a small full set would otherwise hardly move T_full from S.
        "full": (RunSpec(config.arch, full_length(tr, len(data.target.train)), config.seed, init=s_path), data.target_full),
    }
    models, records = {"source": source_model}, {"source": source_rec}
    for name, (spec, task_data) in stages.items():
        take_turn()  # each stage on the cores free when it starts (paramreuse.cores)
        models[name], records[name] = run_training(spec, task_data, out / name, device, progress=progress, stage=name,
                                                   upstream=upstream)
    key = fingerprint({"models": [r["fingerprint"] for r in records.values()], "config": config.to_dict()})
    take_turn()
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
        "training": fewshot_length(config, records),
        "model": {"path": str(out / MODEL_FILE)} | {k: model[k] for k in ("strategy", "why", "metric", "test_metric",
                                                                          "shots", "seed")},
        "warnings": caveats(config, data, records, transfer),
        **_headlines(evidence, transfer),
        "environment": environment(device),
        "seconds": time.perf_counter() - start,
    }
    results = {"answer": study_answer(out, results)} | results  # the first box, first
    write_json(out / RESULTS_FILE, results)
    render_report(out)
    return results


def study_answer(out: Path, results: dict) -> dict:
    """The first box (decision, evidence, expected gain, model; where the study's own numbers point elsewhere),
    composed from the files the report reads, so results.json and the report say the same."""
    values = [m["test_metric"] for m in results["models"].values() if m["test_metric"] is not None]
    style = metric_style(results["metric"], values, results["units"])
    plan, transfer = read_json(out / PLAN_FILE), read_json(out / results["transfer"]["file"])
    return answer_box(plan, transfer, style, results).to_dict()


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


def fewshot_length(config: StudyConfig, records: dict) -> dict:
    """The few-shot trainings' length: as asked ([training], --epochs/--steps), as T trained, and a
    ``note`` when the floor (min_steps) raised the asked epochs."""
    done = records["target"]["training"]
    asked = config.training.asked()
    raised = asked["epochs"] is not None and done.get("note")
    return {"asked": asked, "epochs": done.get("epochs"), "steps": done.get("steps"), "note": raised or None}


def caveats(config: StudyConfig, data: StudyData, records: dict, transfer: dict) -> list[str]:
    """What limits the study's verdicts: too few images to judge the tolerance, every model at chance, a model
    trained fewer steps than the few-shot trainings."""
    target = data.target
    tolerance = config.thresholds.for_task(target.kind).layer_tolerance
    judged = target.train if config.budget == Budget.SHOTS else target.val
    what = "cross-fitted evaluation set (the shots)" if config.budget == Budget.SHOTS else "validation set"
    found = [validation_caveat(len(judged), tolerance, metric=target.kind.metric_name, units=target.kind.units, what=what)]
    metrics = {name: records[name]["test_metric"] for name in ("source", "target", "scratch", "full")}
    strategies = {name: entry["mean"] for name, entry in transfer["strategies"].items()}
    found += chance_warnings(data.source, target, metrics, strategies, seeds=transfer["seeds"])
    trained = {"S": (records["source"], data.source), "T_full": (records["full"], data.target_full)}
    lengths = {label: {"steps": rec["training"].get("steps"), "epochs": rec["training"].get("epochs"),
                       "images": len(d.train)} for label, (rec, d) in trained.items() if d is not None and "given" not in rec}  # fmt: skip
    floor = records["target"]["training"].get("steps")  # None in a run folder from before steps were recorded
    found += short_training_warnings(lengths, floor=floor) if floor else []
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
                        data_dir=config.data_dir, headline=tgt.shots, task=tgt.task, size=tgt.size, keep=keep,
                        channels=tgt.channels)  # fmt: skip


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
    sweep_config = dataclasses.replace(config.sweep, seed=config.seed, tolerance=thresholds.layer_tolerance,
                                       score=thresholds.sweep_score)  # fmt: skip
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
