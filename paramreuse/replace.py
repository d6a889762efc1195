"""Replacement sweeps (J1, J2): put S's values into T and measure the drop of T's metric.

Rows: every unit x parameter group (and the whole unit); cumulative units 1..k; all conv
kernels at once (J1), with T's batch norm kept and with its statistics re-estimated on target
training data. Each row carries its value, drop from T's baseline, and a 95% bootstrap CI of
the drop over evaluation samples (paired: the same samples for T and the variant).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from paramreuse.data import ImageSet
from paramreuse.engine import Evaluator, StopRule, Variant
from paramreuse.layers import Unit, pair_units
from paramreuse.models.heads import head_module_name
from paramreuse.results import JsonlLog, fingerprint, state_digest
from paramreuse.stats import mean_ci
from paramreuse.tasks import CLASSIFICATION, Task
from paramreuse.train import Progress, ProgressEvent

PARAM_GROUPS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit")
CONV_KINDS = ("conv1d", "conv2d", "conv3d", "convtranspose2d")


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how. ``tolerance`` (metric units) is the early-stopping boundary."""

    params: tuple[str, ...] = PARAM_GROUPS
    recalibrate_bn: bool = False
    cached: bool = True
    adaptive: bool = True
    tolerance: float = 0.02
    batch_size: int = 250
    bootstrap: int = 1000
    seed: int = 0
    max_calibration: int = 1000

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RowSpec:
    id: str
    kind: str  # unit | cumulative | network
    layer: str
    params: str
    keys: tuple[str, ...]
    recalibrate: bool = False
    depth: int | None = None


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    layer: str
    params: str
    value: float
    drop: float
    ci: tuple[float, float]
    n: int
    stopped_early: bool
    recalibrated: bool
    depth: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sweep:
    metric: str
    baseline: float
    rows: tuple[Row, ...]
    config: SweepConfig
    mode: str
    fallback: str | None
    seconds: float
    samples: int
    resumed_rows: int = 0
    extra: dict = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]

    def to_dict(self) -> dict:
        row = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("kind", "depth")}  # noqa: E731
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "tolerance": self.config.tolerance,
            "rows": [row(r) for r in self.by_kind("unit")],
            "cumulative": [{"depth": r.depth, **row(r)} for r in self.by_kind("cumulative")],
            "network": {r.params: row(r) for r in self.by_kind("network")},
            "timing": {
                "seconds": self.seconds,
                "mode": self.mode,
                "adaptive": self.config.adaptive,
                "fallback": self.fallback,
                "samples_evaluated": sum(r.n for r in self.rows),
                "samples_full": self.samples * len(self.rows),
                "resumed_rows": self.resumed_rows,
            },
            "config": self.config.to_dict(),
        } | self.extra


def sweep_units(source: nn.Module, target: nn.Module) -> tuple[Unit, ...]:
    """The paired units of S and T, without T's task head (its classes are not S's)."""
    head = head_module_name(target)
    return tuple(u for u in pair_units(source, target) if u.name != head)


def row_specs(units: tuple[Unit, ...], config: SweepConfig) -> list[RowSpec]:
    """Per unit x group rows, cumulative depths, and the two J1 rows."""
    rec = config.recalibrate_bn
    rows = []
    for u in units:
        for p in config.params:
            keys = u.keys if p == "unit" else (u.group(p).keys if p in u.group_names else ())
            if keys:
                rows.append(RowSpec(f"unit:{u.name}:{p}:{rec}", "unit", u.name, p, keys, rec))
    for k in range(1, len(units) + 1):
        keys = tuple(key for u in units[:k] for key in u.keys)
        rows.append(RowSpec(f"depth:{k}:{rec}", "cumulative", units[k - 1].name, f"units 1..{k}", keys, rec, k))
    kernels = tuple(k for u in units if u.kind in CONV_KINDS for k in u.group("conv.weight").keys)
    rows.append(RowSpec("network:kept", "network", "all conv", "conv_kernels_bn_kept", kernels, False))
    rows.append(RowSpec("network:recal", "network", "all conv", "conv_kernels_bn_recalibrated", kernels, True))
    return rows


def _batches(data: ImageSet, size: int, seed: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # A fixed random order: an early stop then sees a random sample of the evaluation set.
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x, y = data.x[order], data.y[order]
    return [(x[i : i + size].to(device), y[i : i + size].to(device)) for i in range(0, len(y), size)]


def replacement_sweep(
    source: nn.Module,
    target: nn.Module,
    val: ImageSet,
    calibration: ImageSet | None = None,
    config: SweepConfig = SweepConfig(),
    task: Task = CLASSIFICATION,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    log_path: str | Path | None = None,
) -> Sweep:
    """Run every replacement row of S (already aligned to T when independent) into T.

    Args:
        val: evaluation data (the target's validation set).
        calibration: target training images for BN re-estimation (needed by recalibrated rows).
        log_path: a JSON-lines file of finished rows; a sweep that finds one resumes from it.
    """
    start = time.perf_counter()
    source, target = source.to(device).eval(), target.to(device).eval()
    units = sweep_units(source, target)
    specs = row_specs(units, config)
    s_state = {k: v.detach() for k, v in source.state_dict().items()}
    key = fingerprint({"s": state_digest(s_state), "t": state_digest(target.state_dict()), "n": len(val), "config": config.to_dict()})
    log = JsonlLog(log_path, key)
    todo = [s for s in specs if s.id not in log.done]
    calib = [] if calibration is None else [b for b, _ in _batches(_first(calibration, config.max_calibration), config.batch_size, config.seed, device)]
    batches = _batches(val, config.batch_size, config.seed, device)
    evaluator = Evaluator(target, batches, task.scores, calib, cached=config.cached)
    rule = StopRule(config.tolerance) if config.adaptive else None
    variants = [Variant({k: s_state[k] for k in s.keys}, s.recalibrate) for s in todo]
    baseline_scores = evaluator.baseline
    for done, (i, result) in enumerate(evaluator.evaluate_all(variants, rule), start=1):
        spec, n = todo[i], len(result.scores)
        diffs = baseline_scores[:n] - result.scores
        row = Row(spec.id, spec.kind, spec.layer, spec.params, float(result.scores.mean()), float(diffs.mean()),
                  mean_ci(diffs, config.bootstrap, config.seed), n, result.stopped_early, spec.recalibrate, spec.depth)  # fmt: skip
        log.add(row.to_dict())
        if progress is not None:
            progress(ProgressEvent("replace", done, len(todo), {"row": f"{spec.layer} {spec.params}"}))
    rows = tuple(Row(**(log.done[s.id] | {"ci": tuple(log.done[s.id]["ci"])})) for s in specs)
    sweep = Sweep(
        task.metric_name, float(baseline_scores.mean()), rows, config, evaluator.mode,
        evaluator.cutter.fallback if evaluator.cutter else None, time.perf_counter() - start,
        len(val), len(specs) - len(todo),
    )  # fmt: skip
    log.close()
    return sweep


def _first(data: ImageSet, n: int) -> ImageSet:
    return data if len(data) <= n else data.subset(torch.arange(n))

