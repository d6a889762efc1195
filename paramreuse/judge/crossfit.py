"""Evidence from the shots alone: cross-fitted replacement sweeps.

A few-shot user has only the shots labelled, and a model cannot be judged on images it was
trained on. So the shots are split into folds (stratified by label, seeded); for each fold,
T_f is S fine-tuned on the other folds (the head fresh, half the steps on half the images),
and the replacement sweep of S into T_f runs on the held-out fold, with BN statistics
re-estimated on T_f's own training images. The per-image differences of all folds are
pooled, so every shot is evaluated once, by a model that never saw it.

The folds are swept in step, row by row, so that a caller who only needs the curve up to
its first undecided depth (the plan rule never looks further) stops there: ``stop``.

With ``fresh``, each fold also trains a freshly initialised network the same way on the same
images, and both are scored per held-out image: the evidence of the network decision
(:mod:`paramreuse.judge.network`), reuse S at all or train from scratch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from paramreuse.data import ImageSet, TaskData
from paramreuse.errors import DataError
from paramreuse.judge.evidence import held_out_outputs
from paramreuse.judge.kernels import compare_models
from paramreuse.judge.network import NetworkEvidence
from paramreuse.judge.replacement import Row, Sweep, SweepConfig, SweepStream, replacement_sweep
from paramreuse.models import build_model
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.loading import rebuilt_for
from paramreuse.progress import Progress
from paramreuse.stats import difference_bounds, mean_ci
from paramreuse.training.loop import TrainConfig, predict, train

FOLDS = 2
FRESH_SEED = 20_000  # seeds the fresh networks of the network decision apart from S and from T_f's heads
FOLD_LOG = "replacement.fold{fold}.rows.jsonl"
EVIDENCE = f"cross-fitted on the shots ({FOLDS} folds): T_f fine-tuned on the other folds, judged on the held-out one"


def fold_indices(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Held-out indices of each fold: every label's images shuffled with the seed and dealt out in turn.

    >>> [f.tolist() for f in fold_indices(torch.tensor([0, 0, 1, 1]), 2, seed=0)]
    [[0, 3], [1, 2]]
    """
    g = torch.Generator().manual_seed(seed)
    held: list[list[int]] = [[] for _ in range(folds)]
    dealt = 0
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label).flatten()
        for member in members[torch.randperm(len(members), generator=g)].tolist():
            held[dealt % folds].append(member)
            dealt += 1
    if any(not h for h in held):
        raise DataError(f"cross-fitting needs at least {folds} labelled images; use more --shots")
    return [torch.tensor(sorted(h)) for h in held]


def source_for(arch: str, state: dict[str, torch.Tensor], data: TaskData, seed: int) -> nn.Module:
    """S in the target's shape: every tensor from ``state``, the head fresh for the target's outputs (seeded)."""
    return rebuilt_for(state, arch, channels=data.channels, num_outputs=data.num_outputs, seed=seed,
                       where="S for cross-fitting")[0]  # fmt: skip


def crossfit_sweep(
    *,
    arch: str,
    state: dict[str, torch.Tensor],
    data: TaskData,
    config: SweepConfig,
    training: TrainConfig,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    log_dir: Path | None = None,
    stop: Callable[[Row], bool] | None = None,
    fresh: bool = False,
    rows_if: Callable[[NetworkEvidence], bool] | None = None,
    diagnose: bool = False,
) -> Sweep:
    """The replacement sweep of S into T, cross-fitted on ``data.train`` (the shots); see the module doc.

    ``log_dir``: where each fold's finished rows are logged (``replacement.foldN.rows.jsonl``), so
    that a killed sweep resumes; T_f is retrained (deterministic in the seed) and its rows reused.
    ``stop``: asked of each pooled cumulative row; the sweep ends at the first row it is true for,
    and the rows after it are never evaluated (``extra["stopped_at"]`` gives that row's depth).
    ``fresh``: also train a fresh network per fold and put the network decision's evidence in
    ``extra["network_evidence"]`` (a :class:`NetworkEvidence` document); ``rows_if``: asked of that
    evidence, False skips every row (a plan that trains from scratch needs no frozen prefix).
    ``diagnose``: also measure the paper's J1 (all conv kernels of S in T_f, pooled over folds) and
    J3 (S against each fold's fresh network, aligned) for the benchmark, timed apart in
    ``extra["diagnostics"]``; needs ``fresh``.
    """
    start = time.perf_counter()
    source = source_for(arch, state, data, seed).eval()
    config = dataclasses.replace(config, adaptive=False, keep_diffs=True, seed=seed)
    short = fold_length(training, FOLDS)
    bounds = difference_bounds(data.kind.bounds)
    folds, indices = _trained_folds(arch, state, data, short, folds=FOLDS, seed=seed, device=device,
                                    progress=progress, log_dir=log_dir)  # fmt: skip
    evidence, fresh_models = _network_evidence(arch, data, folds, indices, training=short, seed=seed, device=device,
                                                 progress=progress) if fresh else (None, [])
    extra = {} if evidence is None else {"network_evidence": evidence.to_dict()}
    if diagnose:
        extra |= _diagnostics(source, folds, fresh_models, config=config, data=data, bounds=bounds, device=device)
        if "diagnostics" in extra:
            designs = _designs(arch, state, data, training, seed=seed, device=device)
            extra["diagnostics"]["designs"] = designs  # timed apart from the plan's own evidence, as J1 and J3 are
            extra["diagnostics"]["seconds"] += sum(d["seconds"] for d in designs.values())
    if evidence is not None and rows_if is not None and not rows_if(evidence):
        sweep = _merged_empty(folds, evidence, config, data, time.perf_counter() - start)
        return dataclasses.replace(sweep, extra=sweep.extra | extra)
    if stop is None:  # every row: the batch sweep shares its cached frontiers across rows
        sweeps = [replacement_sweep(source, target, held, fit, config, task=data.kind, device=device, progress=progress,
                                    log_path=log)
                  for target, held, fit, log in folds]  # fmt: skip
        sweep = pooled(sweeps, time.perf_counter() - start, bounds)
        return dataclasses.replace(sweep, extra=sweep.extra | extra)
    streams = [SweepStream(source, target, held, fit, config, task=data.kind, device=device,
                           progress=progress if f == 0 else None, log_path=log)
               for f, (target, held, fit, log) in enumerate(folds)]  # fmt: skip
    rows, stopped_at = [], None
    for parts in zip(*streams):  # the folds in step: each row is pooled before the next one runs
        rows.append(pool_row(parts, config, bounds))
        if rows[-1].kind == "cumulative" and stop(rows[-1]):
            stopped_at = rows[-1].depth
            break
    sweep = _merged([s.sweep() for s in streams], tuple(rows), time.perf_counter() - start)
    return dataclasses.replace(sweep, extra=sweep.extra | extra | {"stopped_at": stopped_at})


def _network_evidence(arch, data: TaskData, folds, indices, *, training: TrainConfig, seed: int, device, progress):
    """Per fold, a fresh network trained as T_f was (same images, steps and seed); both scored per held-out image.

    ``indices``: each fold's held-out positions among the shots, kept so that designs pair up image by image."""
    start = time.perf_counter()
    reuse, fresh, models, kept = [], [], [], []
    for f, ((target, held, fit, _), index) in enumerate(zip(folds, indices)):
        torch.manual_seed(seed + FRESH_SEED + f)
        model = build_model(arch, data.channels, data.num_outputs)
        train(model, fit, training, seed=seed + f, task=data.kind, device=device, progress=progress,
              stage=f"fresh {f + 1}/{len(folds)}")
        targets = data.kind.targets(held)
        outputs = {"reuse": predict(target, held, device), "fresh": predict(model, held, device)}
        reuse += data.kind.scores(outputs["reuse"], targets).tolist()
        fresh += data.kind.scores(outputs["fresh"], targets).tolist()
        kept.append({arm: held_out_outputs(data.kind, out, targets) for arm, out in outputs.items()}
                    | {"index": index.tolist()})
        models.append(model)
    evidence = NetworkEvidence(tuple(reuse), tuple(fresh), time.perf_counter() - start, {"folds": kept})
    return evidence, models


def fold_length(training: TrainConfig, folds: int) -> TrainConfig:
    """A fold's training: (folds-1)/folds of the shots for as many epochs, so the floor (or the exact steps)
    scaled alike (half of each with 2 folds).

    >>> fold_length(TrainConfig(min_steps=150, steps=None), 2).min_steps, fold_length(TrainConfig(steps=9), 3).steps
    (75, 6)
    """
    steps = None if training.steps is None else max(1, training.steps * (folds - 1) // folds)
    return dataclasses.replace(training, min_steps=training.min_steps * (folds - 1) // folds, steps=steps)


def _trained_folds(arch, state, data: TaskData, training: TrainConfig, *, folds: int, seed: int, device,
                   progress: Progress | None = None, log_dir: Path | None = None) -> tuple[list, list[torch.Tensor]]:  # fmt: skip
    """Per fold, T_f: S (its own fresh head) fine-tuned on the other folds; with the held-out set, the fit set and
    the fold's row log. Returns those and each fold's held-out indices."""
    trained, indices = [], fold_indices(data.train.y, folds, seed)
    for f, held in enumerate(indices):
        fit = data.train.subset(_complement(held, len(data.train)))
        target = source_for(arch, state, data, seed + 1 + f)
        train(target, fit, training, seed=seed + f, task=data.kind, device=device, progress=progress,
              stage=f"cross-fit {f + 1}/{folds}")
        log = None if log_dir is None else Path(log_dir) / FOLD_LOG.format(fold=f + 1)
        trained.append((target, data.train.subset(held), fit, log))
    return trained, indices


def design_evidence(arch: str, state: dict[str, torch.Tensor], data: TaskData, training: TrainConfig, *, folds: int,
                    seed: int, device) -> NetworkEvidence:  # fmt: skip
    """The network decision's evidence with ``folds`` folds: each arm trains on (folds-1)/folds of the shots for
    as many epochs (the steps and their floor scaled alike), so more folds sit closer to the full-shot regime."""
    scaled = fold_length(training, folds)
    trained, indices = _trained_folds(arch, state, data, scaled, folds=folds, seed=seed, device=device)
    return _network_evidence(arch, data, trained, indices, training=scaled, seed=seed, device=device, progress=None)[0]


DESIGNS = (3,)  # the benchmark's other fold counts (bench/decision.py replays them beside the 2 folds used)


def _designs(arch, state, data: TaskData, training: TrainConfig, *, seed: int, device) -> dict:
    """Evidence of the other designs for the benchmark, each timed (its trainings included)."""
    out = {}
    for folds in DESIGNS:
        start = time.perf_counter()
        evidence = design_evidence(arch, state, data, training, folds=folds, seed=seed, device=device)
        out[f"folds{folds}"] = evidence.to_dict() | {"seconds": time.perf_counter() - start}
    return out


def _merged_empty(folds, evidence: NetworkEvidence, config: SweepConfig, data: TaskData, seconds: float) -> Sweep:
    """A sweep with no rows (the plan trains from scratch): each fold's baseline is T_f's held-out score, which
    the network evidence already holds (``evidence.reuse``, fold after fold)."""
    parts, start = [], 0
    for _, held, _, _ in folds:
        scores = evidence.reuse[start : start + len(held)]
        start += len(held)
        parts.append(Sweep(data.kind.metric_name, float(torch.tensor(scores, dtype=torch.float64).mean()), (), config, "skipped", None, 0.0, len(held)))
    return _merged(parts, (), seconds)


def _diagnostics(source, folds, fresh_models, *, config: SweepConfig, data: TaskData, bounds, device) -> dict:
    """The paper's J1 and J3 on the folds, for the benchmark's table of its claim; timed apart from the plan's evidence."""
    if not fresh_models:  # J3 compares S with the fresh networks: none were trained
        return {}
    start = time.perf_counter()
    j1_config = dataclasses.replace(config, params=(), cumulative_rows=False, network_rows=True, keep_diffs=True,
                                    score="correct")  # the paper's J1 is read in accuracy
    streams = [list(SweepStream(source, target, held, fit, j1_config, task=data.kind, device=device)) for target, held, fit, _ in folds]
    j1 = {parts[0].params: {"drop": row.drop, "ci": list(row.ci), "n": row.n}
          for parts in zip(*streams) for row in [pool_row(parts, j1_config, bounds)]}  # fmt: skip
    positions = [j3_positions(source, fresh_model, held.x[:2]) for fresh_model, (_, held, _, _) in zip(fresh_models, folds)]
    return {"diagnostics": {"j1": j1, "j3_positions": positions, "seconds": time.perf_counter() - start}}


def j3_positions(source: nn.Module, fresh: nn.Module, example: torch.Tensor) -> list[float]:
    """The paper's J3 per unit: S against a freshly trained network, aligned, each body unit's ``rmse / rmse_null``."""
    comparison = compare_models(source.cpu(), fresh.cpu(), "auto", example_input=example, lineage="independent")
    head = head_module_name(fresh)
    return [layer.null_position for layer in comparison.layers if not in_head(layer.name, head)]


def network_evidence(
    *, arch: str, state: dict[str, torch.Tensor], data: TaskData, training: TrainConfig, seed: int = 0,
    device: torch.device | str = "cpu", progress: Progress | None = None,
) -> NetworkEvidence:  # fmt: skip
    """The network decision's evidence alone (no replacement rows): S-initialised vs fresh, cross-fitted on ``data.train``."""
    sweep = crossfit_sweep(arch=arch, state=state, data=data, config=SweepConfig(params=(), network_rows=False),
                           training=training, seed=seed, device=device, progress=progress, fresh=True,
                           rows_if=lambda evidence: False)  # fmt: skip
    return NetworkEvidence.from_dict(sweep.extra["network_evidence"])


def _complement(index: torch.Tensor, n: int) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[index] = False
    return torch.nonzero(keep).flatten()


def pool_row(parts: tuple[Row, ...] | list[Row], config: SweepConfig, bounds: tuple[float, float] | None = None) -> Row:
    """One row from the same row of disjoint folds: its samples pooled (the drop CI'd inside ``bounds``)."""
    first = parts[0]
    diffs = torch.tensor([d for p in parts for d in p.diffs], dtype=torch.float64)
    n = len(diffs)
    return Row(first.id, first.kind, first.layer, first.params, sum(p.value * p.n for p in parts) / n,
               float(diffs.mean()), mean_ci(diffs, config.bootstrap, config.seed, bounds), n, False,
               first.recalibrated, first.depth, tuple(diffs.tolist()))  # fmt: skip


def pooled(sweeps: list[Sweep], seconds: float, bounds: tuple[float, float] | None = None) -> Sweep:
    """One sweep from the sweeps of disjoint folds: rows pooled over all their samples (drops CI'd inside ``bounds``)."""
    rows = tuple(pool_row(parts, sweeps[0].config, bounds) for parts in zip(*(s.rows for s in sweeps)))
    return _merged(sweeps, rows, seconds)


def _merged(sweeps: list[Sweep], rows: tuple[Row, ...], seconds: float) -> Sweep:
    """The sweep of the folds together, with their pooled ``rows``."""
    first = sweeps[0]
    samples = sum(s.samples for s in sweeps)
    baseline = sum(s.baseline * s.samples for s in sweeps) / samples
    extra = {"evidence": EVIDENCE, "folds": [{"baseline": s.baseline, "samples": s.samples} for s in sweeps]}
    return Sweep(first.metric, baseline, rows, first.config, first.mode, first.fallback, seconds, samples,
                 sum(s.resumed_rows for s in sweeps), extra)  # fmt: skip


def held_out(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(fit, validation): about ``fraction`` of each label's images held out (at least one each)."""
    folds = max(2, round(1 / fraction))
    held = fold_indices(data.y, folds, seed)[0]
    return data.subset(_complement(held, len(data))), data.subset(held)
