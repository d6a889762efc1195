"""The plan: per unit reuse-frozen, reuse-finetuned or re-initialise, from the verdicts (one rule, one place).

The plan rule (measured in bench/README.md, "The plan rule"):

- **Frozen prefix.** Units 1..k stay frozen at S's values for the largest k such that putting
  S's units 1..j back into T (BN statistics re-estimated on the shots) costs at most
  ``layer_tolerance`` *decisively* (the upper end of the drop's 95% CI) for every j <= k. This
  curve ranks frozen depths (Spearman +0.83 over 20 pairs); an undecided depth (CI straddling
  the tolerance) is not frozen.
- **Fine-tuned.** Every other unit starts from S and trains at ``finetuned_rate`` x the rate
  (1.0: a fixed 0.1x lost to fine-tuning everything on every pair measured).
- **Re-initialised.** A unit of an *independent* pair whose kernel is no closer to T than a
  random draw (``rmse/rmse_null >= reinit_position``) starts fresh; for a fine-tuned pair J3
  passes every unit and decides nothing.
- **Head.** Always fresh for the target's outputs, and first trained alone on S's frozen units
  (``warm_head``, LP-FT's warm start): on the five first evaluation pairs LP-FT beat
  fine-tuning from a fresh head by up to 19 points, so round 2 of the calibration adopted it.
- **J1** is the paper's verdict on the whole network; it is reported and never vetoes reuse as
  initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from paramreuse.judge.kernels import Comparison
from paramreuse.judge.network import NetworkDecision, NetworkEvidence, decide_network
from paramreuse.judge.replacement import Row, Sweep
from paramreuse.judge.verdicts import J2, LayerVerdict, Thresholds, j2_status
from paramreuse.models.heads import in_head
from paramreuse.stats import difference_bounds
from paramreuse.tasks import CLASSIFICATION, metric_bounds
from paramreuse.vocabulary import DECISIONS, REUSE_DECISIONS, Decision  # noqa: F401 - re-exported: the plan's words

RULE = (
    "first the network decision: train from scratch (every unit reinit) when S-initialised training scores below "
    "freshly initialised training on held-out shots by the network rule; otherwise reuse S: "
    "reuse-frozen: units 1..k, k the largest depth whose cumulative replacement (S's units 1..j in T, "
    "BN re-estimated) drops at most layer_tolerance for every j <= k, judged on the upper end of the 95% CI "
    "(undecided depths are not frozen); reinit: independent pairs only, where rmse/rmse_null >= reinit_position; "
    "reuse-finetuned: every other unit, at finetuned_rate x the learning rate; the head is always fresh and, "
    "with warm_head, first trained alone on the frozen body (LP-FT); the paper's J1 is reported and decides nothing"
)


@dataclass(frozen=True)
class Plan:
    network_reusable: bool | None  # J1 decisively within network_tolerance; None: undecided
    network_value: float
    network_drop: float
    network_variant: str
    baseline: float
    metric: str
    reusable_depth: int
    lineage: str
    thresholds: Thresholds
    layers: tuple[LayerVerdict, ...]
    evidence: str = "replacement sweep"
    network: NetworkDecision | None = None  # reuse S at all, or train from scratch (None: not measured)
    network_j1: str | None = None  # J1 against network_tolerance with its CI: reusable, not reusable, undecided

    def decisions(self) -> dict[str, str]:
        return {layer.name: layer.decision for layer in self.layers}

    @property
    def reuses(self) -> bool:
        """Whether the plan reuses S at all (a no-go plan trains from scratch)."""
        return any(layer.decision in REUSE_DECISIONS for layer in self.layers)

    @classmethod
    def from_dict(cls, doc: dict) -> Plan:
        """The plan back from its plan.json document (extra keys such as ``rule`` are ignored)."""
        layers = tuple(
            LayerVerdict(**{k: v for k, v in layer.items() if k in LAYER_FIELDS}
                         | {"ci": tuple(layer["ci"]) if layer.get("ci") is not None else None,
                            "decision": Decision(layer["decision"]).value})
            for layer in doc["layers"]
        )  # fmt: skip
        fields = {k: doc[k] for k in PLAN_FIELDS - {"network"} if k in doc}
        network = NetworkDecision.from_dict(doc["network"]) if doc.get("network") else None
        return cls(**fields, thresholds=Thresholds(**doc["thresholds"]), layers=layers, network=network)

    def to_dict(self) -> dict:
        return {
            "network_reusable": self.network_reusable,
            "network_value": self.network_value,
            "network_drop": self.network_drop,
            "network_variant": self.network_variant,
            "network_j1": self.network_j1,
            "network_verdict": "the paper's J1 (S's conv kernels in T), reported; the network decision below decides",
            "decision": "reuse" if self.reuses else "scratch",
            "network": self.network.to_dict() if self.network else None,
            "baseline": self.baseline,
            "metric": self.metric,
            "reusable_depth": self.reusable_depth,
            "lineage": self.lineage,
            "evidence": self.evidence,
            "thresholds": self.thresholds.to_dict(),
            "rule": RULE,
            "layers": [layer.to_dict() for layer in self.layers],
        }


LAYER_FIELDS = {f.name for f in fields(LayerVerdict)}
PLAN_FIELDS = {f.name for f in fields(Plan)} - {"thresholds", "layers"}


def plan_decisions(plan: dict) -> dict[str, str]:
    """Decisions per unit from a plan.json document (its ``layers``), checked against :class:`Decision`."""
    return {layer["name"]: Decision(layer["decision"]).value for layer in plan["layers"]}


def reusable_depth(sweep: Sweep, tolerance: float, freeze_on: str = "ci") -> int:
    """The largest k such that S's units 1..j in T drop at most ``tolerance`` for every j <= k."""
    return frozen_depth(sweep.by_kind("cumulative"), tolerance, freeze_on)


def frozen_depth(cumulative: list[Row], tolerance: float, freeze_on: str = "ci") -> int:
    """The frozen prefix of the plan rule from cumulative rows (any order), judged on ``freeze_on``."""
    depth = 0
    for row in sorted(cumulative, key=lambda r: r.depth):
        if not extends_prefix(row, tolerance, freeze_on):
            break
        depth = row.depth
    return depth


def extends_prefix(row: Row, tolerance: float, freeze_on: str = "ci") -> bool:
    """Whether a cumulative row lets the frozen prefix reach its depth (its drop decisively within ``tolerance``).

    The first row that does not ends the prefix: no row past it can change the plan.
    """
    return j2_status(row.drop, row.ci if freeze_on == "ci" else None, tolerance) is J2.REUSABLE


def decide(
    *, name: str, position: int, depth: int, lineage: str, null_position: float | None, thresholds: Thresholds,
    network: NetworkDecision | None = None, j2: J2 | None = None,
) -> tuple[Decision, str]:
    """The plan rule for one (non-head) unit at 0-based ``position``; returns the decision and why.

    ``network``: the network decision (a scratch decision re-initialises every unit); ``j2``: the
    unit's own replacement verdict, for a reason that says why a unit is frozen against it.
    """
    if network is not None and not network.reuses:
        return Decision.REINIT, f"the network decision is to train from scratch ({network.reason})"
    if position < depth:
        why = f"within the frozen prefix of {depth} unit(s)"
        if j2 is not None and j2 is not J2.REUSABLE:
            why += (f", although its own J2 row is {j2.value}: the prefix is judged on units 1..{depth} put back "
                    "together (BN re-estimated), which is what freezing them does")
        return Decision.FROZEN, why
    if lineage == "independent" and null_position is not None and null_position >= thresholds.reinit_position:
        return Decision.REINIT, (
            f"independent pair and rmse/null {null_position:.3f} >= {thresholds.reinit_position}: "
            "S's kernel is no closer to T than a random draw"
        )
    return Decision.FINETUNED, (
        f"beyond the frozen prefix of {depth}; starts from S, trains at {thresholds.finetuned_rate}x the rate"
    )


def network_decision(evidence: NetworkEvidence, thresholds: Thresholds, bounds, seed: int = 0) -> NetworkDecision:
    """The network rule of ``thresholds`` on cross-fitted evidence, its CI kept in a difference's ``bounds``."""
    return decide_network(evidence, scratch_on=thresholds.scratch_on, scratch_margin=thresholds.scratch_margin,
                          bounds=bounds, seed=seed, score=thresholds.scratch_score)  # fmt: skip


def judge(sweep: Sweep, comparison: Comparison, head: str, thresholds: Thresholds = Thresholds()) -> Plan:
    """Turn a replacement sweep and a kernel comparison into verdicts and a reuse plan.

    Tolerances left at None take the sweep's own tolerance, which is the target task's default
    unless the sweep was given one (PSNR is never judged at 0.02 dB).
    """
    sweep_tolerance = sweep.config.tolerance
    thresholds = thresholds.with_tolerance(sweep_tolerance if sweep_tolerance is not None else CLASSIFICATION.tolerance)
    network = min(sweep.by_kind("network"), key=lambda r: r.drop)
    evidence = sweep.extra.get("network_evidence")
    choice = None
    if evidence is not None:
        bounds = difference_bounds(metric_bounds(sweep.metric))
        choice = network_decision(NetworkEvidence.from_dict(evidence), thresholds, bounds, sweep.config.seed)
    reuses = choice is None or choice.reuses
    depth = reusable_depth(sweep, thresholds.layer_tolerance, thresholds.freeze_on) if reuses else 0
    unit_rows = {r.layer: r for r in sweep.by_kind("unit") if r.params == "unit"}
    swept = [r.layer for r in sorted(sweep.by_kind("cumulative"), key=lambda r: r.depth)]
    layers = []
    for distance in comparison.layers:
        name = distance.name
        if in_head(name, head):
            layers.append(LayerVerdict(name, distance.kind, None, None, distance.null_position, False, False, False,
                                       Decision.REINIT.value, "task head: its outputs are the target's classes",
                                       rate=1.0))  # fmt: skip
            continue
        row = unit_rows.get(name)
        status = j2_status(row.drop, row.ci, thresholds.layer_tolerance) if row is not None else None
        by_rmse = distance.null_position <= thresholds.rmse_position
        position = swept.index(name) if name in swept else len(swept)
        decision, why = decide(name=name, position=position, depth=depth, lineage=comparison.lineage,
                               null_position=distance.null_position, thresholds=thresholds, network=choice,
                               j2=status)  # fmt: skip
        evidence = (
            f"J2 drop {row.drop:+.4f} [{row.ci[0]:+.4f}, {row.ci[1]:+.4f}] vs tolerance {thresholds.layer_tolerance}: "
            f"{status.value}; " if row is not None else "J2 not swept; "
        ) + f"J3 rmse/null {distance.null_position:.3f} {'<=' if by_rmse else '>'} {thresholds.rmse_position}"
        rate = {Decision.FROZEN: 0.0, Decision.FINETUNED: thresholds.finetuned_rate, Decision.REINIT: 1.0}[decision]
        layers.append(LayerVerdict(name, distance.kind, row.drop if row else None, row.ci if row else None,
                                   distance.null_position, status is J2.REUSABLE, by_rmse, position < depth,
                                   decision.value, f"{why} ({evidence})", status.value if status else None, rate))  # fmt: skip
    j1 = j2_status(network.drop, network.ci, thresholds.network_tolerance)
    return Plan(
        network_reusable={J2.REUSABLE: True, J2.NOT_REUSABLE: False}.get(j1),
        network_value=network.value,
        network_drop=network.drop,
        network_variant=network.params,
        baseline=sweep.baseline,
        metric=sweep.metric,
        reusable_depth=depth,
        lineage=comparison.lineage,
        thresholds=thresholds,
        layers=tuple(layers),
        evidence=sweep.extra.get("evidence", "replacement sweep"),
        network=choice,
        network_j1=j1.value,
    )
