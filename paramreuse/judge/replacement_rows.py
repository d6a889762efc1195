"""What a replacement sweep is asked and what it answers: its config, its row specs, its rows and the sweep."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from paramreuse.config import DROP_BOUND, check_at_least, check_choice
from paramreuse.judge.evidence import SWEEP_SCORES, sweep_score
from paramreuse.tasks import Task
from paramreuse.vocabulary import score_name

PARAM_GROUPS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit")
CONV_KINDS = ("conv1d", "conv2d", "conv3d", "convtranspose2d")


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how. ``tolerance`` (metric units; None: the task's default) is the
    early-stopping boundary. ``recalibrate_bn`` applies to the per-unit rows; the cumulative
    rows (S's units 1..k in T) re-estimate BN statistics unless ``cumulative_recalibrate`` is
    off, because that variant ranks frozen depths (bench/README.md). ``keep_diffs`` keeps the
    per-sample differences on every row (for pooling folds). ``score`` is what each image scores
    (:func:`paramreuse.judge.evidence.output_scores`): ``correct`` is the task's metric per image (0/1,
    hard Dice, PSNR); ``true-prob``, ``brier`` and ``soft-dice`` read how sure T is, and the drops are
    then in that score's units."""

    params: tuple[str, ...] = PARAM_GROUPS
    recalibrate_bn: bool = False
    cached: bool = True
    adaptive: bool = True
    tolerance: float | None = None
    batch_size: int = 250
    bootstrap: int = 1000
    seed: int = 0
    max_calibration: int = 1000
    cumulative_recalibrate: bool = True
    keep_diffs: bool = False
    network_rows: bool = True  # the two J1 rows (all conv kernels); a plan made from the curve alone skips them
    cumulative_rows: bool = True  # the curve of S's units 1..k in T; J1 alone skips it
    score: str = "correct"

    def __post_init__(self) -> None:
        for group in self.params:
            check_choice("params", group, PARAM_GROUPS)
        check_at_least(self, ("tolerance",), 0, DROP_BOUND)
        check_at_least(self, ("batch_size", "bootstrap", "max_calibration"), 1)
        check_choice("score", self.score, SWEEP_SCORES)

    def to_dict(self) -> dict:
        return asdict(self)

    def metric(self, task: Task) -> str:
        """What the rows' values and drops are in: the task's metric, or the score read instead."""
        return score_name(sweep_score(task, self.score)) or task.metric_name


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
    diffs: tuple[float, ...] | None = None  # per-sample drops, when the sweep keeps them

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
        row = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("kind", "depth", "diffs")}  # noqa: E731
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
