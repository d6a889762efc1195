"""One run of the transfer grid: a strategy prepared from S, trained on one draw's shots and
evaluated on the target test set; the plan made from those shots; best-depth's candidates; the
job a worker runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from paramreuse.backends import DataSpec
from paramreuse.data import TaskData, load_task
from paramreuse.errors import CheckpointError
from paramreuse.judge.crossfit import crossfit_sweep, held_out
from paramreuse.judge.network import NetworkEvidence
from paramreuse.judge.plan import decide as decide_unit
from paramreuse.judge.plan import extends_prefix, frozen_depth, network_decision
from paramreuse.judge.replacement import SweepConfig
from paramreuse.models import build_model, read_state_dict, save_checkpoint
from paramreuse.models.heads import head_module_name
from paramreuse.models.state_dicts import state_digest
from paramreuse.stats import difference_bounds
from paramreuse.training.loop import TrainConfig, evaluate, train, training_length
from paramreuse.training.run import FRESH_INIT_OFFSET, model_info
from paramreuse.transfer.config import HOLDOUT, MAX_CANDIDATES, Source, TransferConfig
from paramreuse.transfer.strategies import L2SP, strategy, transplant, unit_names
from paramreuse.vocabulary import Decision


@dataclass(frozen=True, eq=False)
class Prepared:
    """A target model with S transplanted, and how to train it."""

    model: torch.nn.Module
    training: TrainConfig
    penalty: L2SP | None
    copied: int
    warm_head: bool = False
    decisions: dict = field(default_factory=dict)  # the strategy's decisions per unit


def prepare(
    source: Source, task: TaskData, name: str, *, plan: dict | None, seed: int, config: TransferConfig,
    depth: int | None = None,
) -> Prepared:  # fmt: skip
    """A fresh target model (seeded apart from S's initialisation) with S transplanted as ``name`` says."""
    torch.manual_seed(seed + FRESH_INIT_OFFSET)
    model = build_model(source.arch, task.channels, task.num_outputs)
    chosen = strategy(name, model, plan, depth, config.finetuned_scale)
    report = transplant(source.state, model, chosen.decisions)
    penalty = None
    if chosen.l2sp:
        anchor = {k: v for k, v in model.named_parameters() if k in set(report.copied)}
        penalty = L2SP(anchor, config.l2sp_alpha, config.l2sp_beta)
    decay = 0.0 if chosen.l2sp else config.training.weight_decay  # L2-SP replaces plain weight decay
    training = replace(config.training, lr_scale=chosen.lr_scale, weight_decay=decay, auto_rgn=chosen.auto_rgn)
    return Prepared(model, training, penalty, len(report.copied), chosen.warm_head, dict(chosen.decisions))


def run_one(
    source: Source, task: TaskData, name: str, *, plan: dict | None, seed: int, config: TransferConfig,
    device, depth: int | None = None, warm_head: bool = False,
) -> dict:  # fmt: skip
    """Prepare, train on the shots, evaluate on the target test set; ``model`` is the trained model."""
    p = prepare(source, task, name, plan=plan, seed=seed, config=config, depth=depth)
    p = replace(p, warm_head=p.warm_head or warm_head)
    result = fit(p, task.train, task, seed, device)
    return {
        "value": evaluate(p.model, task.test, task.kind, device, frozen=True),
        "val": result.val_metric,
        "depth": depth,
        "copied": p.copied,
        "seconds": result.seconds,
        "epochs": result.epochs,
        "steps": result.steps,
        "decisions": p.decisions,
        "model": p.model,
    }


def fit(p: Prepared, images, task: TaskData, seed: int, device):
    """Train a prepared model on ``images``; LP-FT first trains the head alone on the frozen body."""
    if p.warm_head:
        head = head_module_name(p.model)
        train(p.model, images, replace(p.training, lr_scale=(("", 0.0), (head, 1.0))), seed=seed, task=task.kind,
              device=device)
    val = task.val if len(task.val) else None
    return train(p.model, images, p.training, seed=seed, val=val, task=task.kind, device=device, penalty=p.penalty)


def plan_from_shots(source: Source, task: TaskData, seed: int, config: TransferConfig, device) -> tuple[dict, dict]:
    """The plan rule applied to this run's shots alone: decisions per unit, and the evidence.

    First the network decision (reuse S or train from scratch, cross-fitted); when it reuses S,
    the frozen prefix from the cumulative curve. A scratch plan re-initialises every unit.
    """
    thresholds = config.thresholds.for_task(task.kind)
    tolerance, freeze_on = thresholds.layer_tolerance, thresholds.freeze_on
    # The cumulative curve only, and only up to the first depth that ends the frozen prefix.
    sweep_config = SweepConfig(params=(), tolerance=tolerance, network_rows=False, score=thresholds.sweep_score)
    bounds = difference_bounds(task.kind.bounds)
    decide = lambda evidence: network_decision(evidence, thresholds, bounds, seed)  # noqa: E731
    measured = thresholds.decides_network or config.diagnose  # the evidence costs two fresh trainings
    sweep = crossfit_sweep(arch=source.arch, state=source.state, data=task, config=sweep_config,
                           training=config.training, seed=seed, device=device,
                           stop=lambda row: not extends_prefix(row, tolerance, freeze_on),
                           fresh=measured, rows_if=lambda evidence: decide(evidence).reuses,
                           diagnose=config.diagnose)  # fmt: skip
    network = decide(NetworkEvidence.from_dict(sweep.extra["network_evidence"])) if measured else None
    names = unit_names(build_model(source.arch, task.channels, task.num_outputs))
    reuses = network is None or network.reuses
    depth = frozen_depth(sweep.by_kind("cumulative"), tolerance, freeze_on) if reuses else 0
    # The plan rule of judge.decide: T_f is S fine-tuned, so J3 re-initialises nothing here.
    decisions = {n: decide_unit(name=n, position=i, depth=depth, lineage="finetuned", null_position=None,
                                thresholds=thresholds, network=network)[0].value
                 for i, n in enumerate(names)}  # fmt: skip
    curve = [{"depth": r.depth, "drop": r.drop, "ci": list(r.ci)} for r in sweep.by_kind("cumulative")]
    diagnostics = sweep.extra.get("diagnostics")
    seconds = sweep.seconds - (diagnostics["seconds"] if diagnostics else 0.0)  # the plan's own evidence only
    evidence = {"depth": depth, "plan_seconds": seconds, "curve": curve, "tolerance": tolerance,
                "network": network.to_dict() if network else None}  # fmt: skip
    if measured:
        evidence["network_outputs"] = sweep.extra["network_evidence"].get("outputs")
    return decisions, evidence | ({"diagnostics": diagnostics} if diagnostics else {})


def _plan_run(source: Source, task: TaskData, plan: dict | None, seed: int, config: TransferConfig, device) -> dict:
    """The plan strategy: a given plan applied as it is, or the plan made from this run's shots.

    A plan that re-initialises every unit trains exactly as scratch does (no warm head: there is no body to probe).
    """
    if plan is not None:  # at ``config.finetuned_scale``, its head warmed up as ``config.thresholds`` say
        warm = config.thresholds.warm_head and any(d != Decision.REINIT.value for d in plan.values())
        return run_one(source, task, "plan", plan=plan, seed=seed, config=config, device=device, warm_head=warm)
    decisions, evidence = plan_from_shots(source, task, seed, config, device)
    planned = replace(config, finetuned_scale=config.thresholds.finetuned_rate)
    warm = config.thresholds.warm_head and any(d != Decision.REINIT.value for d in decisions.values())
    return run_one(source, task, "plan", plan=decisions, seed=seed, config=planned, device=device, warm_head=warm) | evidence


@dataclass(frozen=True, eq=False)
class TransferJob:
    """One run: a strategy trained on one (shots, seed) draw of the target data."""

    arch: str
    state: dict | str  # S's tensors, or a safetensors file of them (for workers)
    plan: dict | None
    data: DataSpec  # the target task with this run's shots and seed
    strategy: str
    seed: int
    config: TransferConfig
    device: str | torch.device
    digest: str = ""  # what S's tensors hash to, in key order (checked when read from the file)
    model_path: str | None = None  # where the worker saves the trained model (atomically), if anywhere


def transfer_job(job: TransferJob) -> dict:
    """Load the target data (and S, when given as a file), train the strategy, evaluate it; save the
    model to ``job.model_path`` when given, from the worker that trained it."""
    task_data = load_task(job.data.name, **job.data.options)
    source = Source(job.arch, job.state if isinstance(job.state, dict) else _read_source(job.state, job.digest))
    if job.strategy == "best-depth":
        result = _best_depth(source, task_data, job.plan, job.seed, job.config, job.device)
    elif job.strategy == "plan":
        result = _plan_run(source, task_data, job.plan, job.seed, job.config, job.device)
    else:
        result = run_one(source, task_data, job.strategy, plan=job.plan, seed=job.seed, config=job.config,
                         device=job.device)  # fmt: skip
    model = result.pop("model")
    if job.model_path is not None:
        extra = {"strategy": job.strategy, "metric": task_data.kind.metric_name, "test_metric": result["value"],
                 "shots": job.data.options.get("shots"), "seed": job.seed, "decisions": result["decisions"]}  # fmt: skip
        save_checkpoint(job.model_path, model.cpu(), model_info(job.arch, task_data, extra))
    return result


def _read_source(path: str, digest: str) -> dict:
    state = read_state_dict(path)
    if state_digest(dict(sorted(state.items()))) != digest:
        raise CheckpointError(
            f"a worker read other tensors for S from {path} than the driver wrote; is the --out folder shared by every worker?"
        )
    return state


def candidate_depths(units: int, most: int = MAX_CANDIDATES) -> list[int]:
    """Frozen depths best-depth tries: all of 0..units, or ``most`` of them evenly spaced (0 and units included).

    >>> candidate_depths(4), candidate_depths(20, 5)
    ([0, 1, 2, 3, 4], [0, 5, 10, 15, 20])
    """
    if units + 1 <= most:
        return list(range(units + 1))
    return sorted({round(i * units / (most - 1)) for i in range(most)})


def _best_depth(source: Source, task: TaskData, plan, seed: int, config: TransferConfig, device) -> dict:
    """Oracle: freeze units 1..k for every candidate k, keep the k with the best validation metric.

    With the shots budget, candidates train on four fifths of the shots and are judged on the
    rest; the chosen depth is then trained on all shots. Only that model meets the test set.
    """
    units = len(unit_names(build_model(source.arch, task.channels, task.num_outputs)))
    if len(task.val):
        fit_images, val = task.train, task.val
    else:
        fit_images, val = held_out(task.train, HOLDOUT, seed)
    candidates = []
    for k in candidate_depths(units, config.depth_candidates):
        p = prepare(source, task, "best-depth", plan=plan, seed=seed, config=config, depth=k)
        result = train(p.model, fit_images, p.training, seed=seed, task=task.kind, device=device)
        score = evaluate(p.model, val, task.kind, device, frozen=True)
        candidates.append((score, -k, k, p, result.seconds))
    val_score, _, depth, best, _ = max(candidates, key=lambda c: c[:2])
    seconds = sum(c[4] for c in candidates)
    if fit_images is not task.train:  # retrain the chosen depth on every shot
        best = prepare(source, task, "best-depth", plan=plan, seed=seed, config=config, depth=depth)
        seconds += train(best.model, task.train, best.training, seed=seed, task=task.kind, device=device).seconds
    epochs, steps = training_length(best.training, len(task.train))
    return {
        "value": evaluate(best.model, task.test, task.kind, device, frozen=True),
        "val": val_score,
        "depth": depth,
        "copied": best.copied,
        "decisions": best.decisions,
        "model": best.model,
        "seconds": seconds,
        "candidate_seconds": sum(c[4] for c in candidates),
        "candidates": [{"depth": c[2], "val": c[0]} for c in candidates],
        "epochs": epochs,
        "steps": steps,
    }
