"""What a transfer grid is asked: its strategies, shots, seeds, training and labelled budget, and S.

The labelled budget (``TransferConfig.budget``): with ``shots`` (the default) a run sees only
its shots: the plan is made from them by cross-fitting (:mod:`paramreuse.judge.crossfit`) and
best-depth chooses its depth on a fifth of them held out. ``validation-set`` adds the carved
validation set (10% of each class, up to 500 images) for best-depth's choice: far more labels
than a few-shot user has, shown only as a labelled reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from paramreuse.config import ConfigError, check_at_least, check_choice
from paramreuse.judge.verdicts import Thresholds
from paramreuse.training.loop import FEWSHOT, TrainConfig
from paramreuse.transfer.strategies import STRATEGIES
from paramreuse.vocabulary import BUDGETS, Budget

HOLDOUT = 0.2  # best-depth's share of the shots held out to choose its depth (shots budget)
MAX_CANDIDATES = 9  # best-depth tries at most this many frozen depths, evenly spaced


@dataclass(frozen=True)
class TransferConfig:
    """Which strategies, shots and seeds; how the target model is trained; the labelled budget.

    ``thresholds`` are the plan rule's (the plan is made afresh from each run's shots when no
    plan is given); ``finetuned_scale`` is the rate of reuse-finetuned units of a given plan.
    """

    strategies: tuple[str, ...] = STRATEGIES
    shots: tuple[int, ...] = (5, 10, 20, 50)
    seeds: int = 5
    training: TrainConfig = field(default_factory=lambda: FEWSHOT)
    finetuned_scale: float = 1.0
    l2sp_alpha: float = 0.01
    l2sp_beta: float = 0.01
    test_per_class: int | None = None
    budget: str = "shots"
    thresholds: Thresholds = field(default_factory=Thresholds)
    depth_candidates: int = MAX_CANDIDATES
    diagnose: bool = False  # the plan's runs also measure the paper's J1 and J3 (benchmarks; timed apart)

    def __post_init__(self) -> None:
        for name in self.strategies:
            check_choice("strategies", name, STRATEGIES)
        check_choice("budget", self.budget, BUDGETS)
        if self.seeds < 1 or any(n < 1 for n in self.shots):
            raise ConfigError(f"seeds and shots must be at least 1, got {self.seeds} and {list(self.shots)}")
        check_at_least(self, ("depth_candidates",), 2)
        check_at_least(self, ("finetuned_scale",), 0, ">= 0")

    def to_dict(self) -> dict:
        return asdict(self) | {"training": self.training.to_dict()}

    def data_options(self) -> dict:
        """What the budget means for loading a run's target data."""
        return Budget(self.budget).data_options


@dataclass(frozen=True, eq=False)
class Source:
    """S's architecture and tensors, as a transfer needs them."""

    arch: str
    state: dict
