"""Judgements J1 (network), J2 (layers by replacement), J3 (layers by kernel RMSE) and the plan.

Every verdict is made against a threshold that is printed with it and can be overridden.
Decision per unit: ``reuse-frozen`` when it lies within the reusable depth and passes both J2
and J3; ``reuse-finetuned`` when it passes at least one of them; ``reinit`` otherwise. The
task head is always re-initialised (its outputs are the target's classes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from paramreuse.compare import Comparison
from paramreuse.replace import Sweep
from paramreuse.tasks import CLASSIFICATION, Task

DECISIONS = ("reuse-frozen", "reuse-finetuned", "reinit")


@dataclass(frozen=True)
class Thresholds:
    """Defaults calibrated on the study's default pair (see bench/README.md).

    network_tolerance, layer_tolerance: the largest drop of the target metric (metric units,
    e.g. 0.02 = 2 accuracy points) at which a replacement still counts as reusable; None means
    the task's default (0.02 for accuracy and Dice, 0.5 dB for PSNR), see :meth:`for_task`.
    rmse_position: the largest ``rmse / rmse_null`` (0 = T's own values, 1 = no closer to T
    than a random initialisation) at which a unit's kernel counts as reusable.
    """

    network_tolerance: float | None = None
    layer_tolerance: float | None = None
    rmse_position: float = 0.5

    def for_task(self, task: Task) -> "Thresholds":
        """These thresholds with every tolerance left at None set to the task's default."""
        pick = lambda v: task.tolerance if v is None else v  # noqa: E731
        return replace(self, network_tolerance=pick(self.network_tolerance), layer_tolerance=pick(self.layer_tolerance))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerVerdict:
    name: str
    kind: str
    drop: float | None
    ci: tuple[float, float] | None
    null_position: float | None
    reusable_by_replacement: bool
    reusable_by_rmse: bool
    within_depth: bool
    decision: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    network_reusable: bool
    network_value: float
    network_drop: float
    network_variant: str
    baseline: float
    metric: str
    reusable_depth: int
    lineage: str
    thresholds: Thresholds
    layers: tuple[LayerVerdict, ...]

    def decisions(self) -> dict[str, str]:
        return {layer.name: layer.decision for layer in self.layers}

    def to_dict(self) -> dict:
        return {
            "network_reusable": self.network_reusable,
            "network_value": self.network_value,
            "network_drop": self.network_drop,
            "network_variant": self.network_variant,
            "baseline": self.baseline,
            "metric": self.metric,
            "reusable_depth": self.reusable_depth,
            "lineage": self.lineage,
            "thresholds": self.thresholds.to_dict(),
            "rule": (
                "reuse-frozen: within the reusable depth and passes J2 (drop <= layer_tolerance) and J3 "
                "(rmse/rmse_null <= rmse_position); reuse-finetuned: passes one of them; reinit: neither"
            ),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def reusable_depth(sweep: Sweep, tolerance: float) -> int:
    """The largest k such that units 1..k replaced together drop at most ``tolerance``."""
    depth = 0
    for row in sweep.by_kind("cumulative"):
        if row.drop > tolerance:
            break
        depth = row.depth
    return depth


def judge(sweep: Sweep, comparison: Comparison, head: str, thresholds: Thresholds = Thresholds()) -> Plan:
    """Turn a replacement sweep and a kernel comparison into verdicts and a reuse plan.

    Tolerances left at None take the classification default; :func:`paramreuse.assess.assess`
    passes thresholds already set for the target's task.
    """
    thresholds = thresholds.for_task(CLASSIFICATION)
    network = min(sweep.by_kind("network"), key=lambda r: r.drop)
    depth = reusable_depth(sweep, thresholds.layer_tolerance)
    unit_rows = {r.layer: r for r in sweep.by_kind("unit") if r.params == "unit"}
    swept = [r.layer for r in sweep.by_kind("cumulative")]
    layers = []
    for distance in comparison.layers:
        name = distance.name
        if name == head:
            layers.append(LayerVerdict(name, distance.kind, None, None, distance.null_position, False, False, False,
                                       "reinit", "task head: its outputs are the target's classes"))  # fmt: skip
            continue
        row = unit_rows.get(name)
        by_rep = row is not None and row.drop <= thresholds.layer_tolerance
        by_rmse = distance.null_position <= thresholds.rmse_position
        within = name in swept and swept.index(name) < depth
        decision = "reuse-frozen" if within and by_rep and by_rmse else "reuse-finetuned" if by_rep or by_rmse else "reinit"
        reason = (
            f"replacement drop {row.drop:+.4f} {'<=' if by_rep else '>'} {thresholds.layer_tolerance}; "
            if row is not None
            else "not swept; "
        ) + (
            f"rmse/null {distance.null_position:.3f} {'<=' if by_rmse else '>'} {thresholds.rmse_position}; "
            f"{'within' if within else 'beyond'} reusable depth {depth}"
        )
        layers.append(LayerVerdict(name, distance.kind, row.drop if row else None, row.ci if row else None,
                                   distance.null_position, by_rep, by_rmse, within, decision, reason))  # fmt: skip
    return Plan(
        network_reusable=network.drop <= thresholds.network_tolerance,
        network_value=network.value,
        network_drop=network.drop,
        network_variant=network.params,
        baseline=sweep.baseline,
        metric=sweep.metric,
        reusable_depth=depth,
        lineage=comparison.lineage,
        thresholds=thresholds,
        layers=tuple(layers),
    )


def holds_text(holds: bool | None) -> str:
    """A finding's ``holds`` in words; None means the network has no parameters of that group."""
    return {True: "yes", False: "no", None: "n/a (no such parameters)"}[holds]


def parameter_type_findings(sweep: Sweep) -> list[dict]:
    """Check the companion paper's parameter-type findings on a sweep, whatever the outcome.

    Each finding compares mean drops over units (with the per-unit drops as evidence).
    """
    by_group: dict[str, list[float]] = {}
    for row in sweep.by_kind("unit"):
        by_group.setdefault(row.params, []).append(row.drop)
    mean = lambda g: sum(by_group[g]) / len(by_group[g]) if by_group.get(g) else float("nan")  # noqa: E731
    tol = sweep.config.tolerance
    claims = [
        ("BN running statistics matter more than BN weight/bias", ("bn.stats", "bn.weight", "bn.bias"),
         lambda: mean("bn.stats") > max(mean("bn.weight"), mean("bn.bias"))),
        ("BN weight/bias are reusable (mean drop <= tolerance)", ("bn.weight", "bn.bias"),
         lambda: max(mean("bn.weight"), mean("bn.bias")) <= tol),
        ("conv weights are very sensitive (mean drop > tolerance)", ("conv.weight",), lambda: mean("conv.weight") > tol),
        ("conv biases are reusable (mean drop <= tolerance)", ("conv.bias",), lambda: mean("conv.bias") <= tol),
    ]  # fmt: skip
    means = {g: mean(g) for g in ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats")}
    # A finding about a group the network does not have (e.g. conv biases before BN) cannot be checked: None.
    return [{"finding": text, "holds": bool(test()) if all(by_group.get(g) for g in needs) else None,
             "mean_drops": means, "tolerance": tol} for text, needs, test in claims]  # fmt: skip

