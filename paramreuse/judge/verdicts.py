"""Verdicts: J1 (network) and J2 (layers by replacement) judged against their tolerances, J3 (layers by
kernel RMSE), the thresholds they use, and the companion paper's parameter-type findings.

Every verdict is made against a threshold that is printed with it and can be overridden. The plan
made from them is in :mod:`paramreuse.judge.plan`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace

from paramreuse.config import DROP_BOUND, check_at_least, check_choice
from paramreuse.judge.evidence import SWEEP_SCORES
from paramreuse.judge.network import SCORES, SCRATCH_ON
from paramreuse.judge.replacement import Sweep
from paramreuse.tasks import Task

FREEZE_ON = ("ci", "mean")


class J2(str, enum.Enum):
    """A replacement drop judged against the tolerance, with its CI."""

    REUSABLE = "reusable"  # the whole CI at or below the tolerance
    NOT_REUSABLE = "not reusable"  # the whole CI above it
    UNDECIDED = "undecided"  # the CI straddles the tolerance


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the verdicts and the plan rule; calibrated in bench/README.md.

    network_tolerance, layer_tolerance: the largest drop of the target metric (metric units,
    e.g. 0.02 = 2 accuracy points) at which a replacement still counts as reusable; None means
    the task's default (0.02 for accuracy and Dice, 0.5 dB for PSNR), see :meth:`for_task`.
    rmse_position: the largest ``rmse / rmse_null`` (0 = T's own values, 1 = no closer to T
    than a random initialisation) at which a unit's kernel counts as reusable (J3).
    reinit_position: from this ``rmse / rmse_null`` on, an independent pair's unit is re-initialised.
    finetuned_rate: learning-rate multiplier of reuse-finetuned units.
    freeze_on: which end of a cumulative drop must be within layer_tolerance to freeze: ``ci``
    (the upper end of its 95% CI: undecided depths are not frozen) or ``mean`` (the estimate).
    warm_head: train the fresh head alone on the frozen body before the plan's training (LP-FT).
    scratch_on, scratch_margin: the network decision (:mod:`paramreuse.judge.network`): train from
    scratch when the cross-fitted difference "S-initialised minus fresh" (its mean, or the upper
    end of its CI) is below ``-scratch_margin``; with ``se`` (the default) the margin counts
    standard errors of the mean; ``never`` always reuses S.
    scratch_score: the per-image score that difference is measured in (:mod:`paramreuse.judge.evidence`):
    ``correct`` (0/1; segmentation: hard Dice), ``brier``, ``true-prob``, ``log-loss-ts`` (classification)
    or ``soft-dice`` (segmentation); reconstruction is always measured in PSNR.
    sweep_score: the per-image score the replacement sweep's rows (J2 and the frozen-prefix curve) are
    read in: ``correct`` (the task's metric per image), ``brier``, ``true-prob`` or ``soft-dice``
    (segmentation); ``layer_tolerance`` is then in that score's units.
    """

    network_tolerance: float | None = None
    layer_tolerance: float | None = None
    rmse_position: float = 0.5
    reinit_position: float = 1.0
    finetuned_rate: float = 1.0
    freeze_on: str = "ci"
    warm_head: bool = True
    scratch_on: str = "se"  # chosen on 23 calibration pairs (bench/README.md, "Sharper evidence")
    scratch_margin: float = 0.5
    scratch_score: str = "true-prob"
    sweep_score: str = "correct"

    def __post_init__(self) -> None:
        check_at_least(self, ("network_tolerance", "layer_tolerance"), 0, DROP_BOUND)
        check_at_least(self, ("rmse_position", "reinit_position", "finetuned_rate"), 0, ">= 0")
        check_choice("freeze_on", self.freeze_on, FREEZE_ON)
        check_choice("scratch_on", self.scratch_on, SCRATCH_ON)
        check_at_least(self, ("scratch_margin",), 0, ">= 0")
        check_choice("scratch_score", self.scratch_score, SCORES)
        check_choice("sweep_score", self.sweep_score, SWEEP_SCORES)

    @property
    def decides_network(self) -> bool:
        """Whether the network decision is on (its evidence costs two fresh trainings on the folds)."""
        return self.scratch_on != "never"

    def for_task(self, task: Task) -> Thresholds:
        """These thresholds with every tolerance left at None set to the task's default."""
        return self.with_tolerance(task.tolerance)

    def with_tolerance(self, default: float) -> Thresholds:
        """These thresholds with every tolerance left at None set to ``default`` (the one place that fills them)."""
        pick = lambda v: default if v is None else v  # noqa: E731
        return replace(self, network_tolerance=pick(self.network_tolerance), layer_tolerance=pick(self.layer_tolerance))

    def to_dict(self) -> dict:
        return asdict(self)


def j2_status(drop: float, ci: tuple[float, float] | None, tolerance: float) -> J2:
    """Reusable when the CI lies at or below ``tolerance``, not reusable above it, else undecided."""
    low, high = ci if ci is not None else (drop, drop)
    if high <= tolerance:
        return J2.REUSABLE
    if low > tolerance:
        return J2.NOT_REUSABLE
    return J2.UNDECIDED


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
    j2: str | None = None
    rate: float | None = None  # learning-rate multiplier while transferring (0 = frozen)

    def to_dict(self) -> dict:
        return asdict(self)


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

