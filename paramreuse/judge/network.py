"""The network decision: reuse S at all, or train the target from scratch?

Made from the shots alone, by cross-fitting (:mod:`paramreuse.judge.crossfit`): on every fold,
S fine-tuned on the other folds (``reuse``) and a freshly initialised network trained the same
way on the same images (``fresh``) are both scored on the held-out fold. The per-image
differences (reuse minus fresh) of all folds are pooled, so every shot is judged once, by two
models that never saw it, and the difference comes with a paired 95% bootstrap CI.

The rule (``Thresholds.scratch_on``, ``scratch_margin`` and ``scratch_score``; the default, the
per-image probability of the true class with ``se`` at 0.5, was chosen on 23 calibration pairs in
bench/README.md, "Sharper evidence"):

- ``se``: train from scratch when the mean difference is below ``-scratch_margin`` standard errors
  of that mean (the default: half a standard error, so a clear tie reuses S);
- ``mean``: when the mean difference is below ``-scratch_margin``, in the score's units;
- ``ci``: only when the whole CI is below ``-scratch_margin`` (scratch must be decisively better);
- ``never``: always reuse (the rule before the network decision existed).

Everything else, ties included, reuses S: a tie costs nothing by definition, and reuse is what
the rest of the plan (its frozen prefix) is built on.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import torch

from paramreuse.judge.evidence import CLASSIFICATION_SCORES, SCORE_BOUNDS, SEGMENTATION_SCORES, paired_scores
from paramreuse.stats import Bounds, difference_bounds, mean_ci

SCRATCH_ON = ("se", "mean", "ci", "never")
SCORES = tuple(dict.fromkeys(CLASSIFICATION_SCORES + SEGMENTATION_SCORES))  # judge.evidence: what each one is


class NetworkChoice(str, enum.Enum):
    """The answer to the user's first question (its value is the name used in plan.json)."""

    REUSE = "reuse"
    SCRATCH = "scratch"


@dataclass(frozen=True)
class NetworkEvidence:
    """Per-image held-out scores of S-initialised and freshly initialised training, pooled over folds.

    ``reuse`` and ``fresh`` are the task's own per-image scores (0/1 for classification); ``outputs``
    keeps each fold's held-out outputs of both arms (:func:`paramreuse.judge.evidence.held_out_outputs`)
    so that any candidate score can be replayed (:meth:`scores`).
    """

    reuse: tuple[float, ...]
    fresh: tuple[float, ...]
    seconds: float = 0.0  # the fresh trainings and their scoring (the reuse side is the sweep's T_f)
    outputs: dict | None = None  # {"folds": [{"reuse": kept, "fresh": kept}, ...]}

    def __post_init__(self) -> None:
        if len(self.reuse) != len(self.fresh) or not self.reuse:
            raise ValueError("network evidence needs the same, non-zero number of reuse and fresh scores")

    @property
    def differences(self) -> torch.Tensor:
        return torch.tensor(self.reuse, dtype=torch.float64) - torch.tensor(self.fresh, dtype=torch.float64)

    def scored_in(self, score: str) -> str:
        """The score ``score`` is read as here: ``correct`` for evidence kept before outputs were, and for
        reconstruction (its own per-image PSNR is continuous already)."""
        if self.outputs is None or list(self.outputs["folds"][0]["reuse"].get("scores", ())) == ["correct"]:
            return "correct"
        return score

    def scores(self, score: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(reuse, fresh) per-image values of ``score``; evidence kept before outputs were has only ``correct``."""
        if score == "correct" or self.outputs is None:
            if score != "correct":
                raise ValueError(f"this evidence kept no outputs to score with {score!r}; only 'correct'")
            return torch.tensor(self.reuse, dtype=torch.float64), torch.tensor(self.fresh, dtype=torch.float64)
        if self.scored_in(score) == "correct":
            return self.scores("correct")
        reuse, fresh = paired_scores(self.outputs, score)
        return torch.from_numpy(reuse), torch.from_numpy(fresh)

    def to_dict(self) -> dict:
        kept = {} if self.outputs is None else {"outputs": self.outputs}
        return {"reuse": list(self.reuse), "fresh": list(self.fresh), "seconds": self.seconds} | kept

    @classmethod
    def from_dict(cls, doc: dict) -> NetworkEvidence:
        return cls(tuple(doc["reuse"]), tuple(doc["fresh"]), doc.get("seconds", 0.0), doc.get("outputs"))


@dataclass(frozen=True)
class NetworkDecision:
    """Reuse S or train from scratch, with the evidence and the rule that decided it."""

    choice: NetworkChoice
    difference: float  # mean held-out score of reuse minus fresh, in the metric's units
    ci: tuple[float, float]  # its paired 95% bootstrap CI
    n: int  # held-out images
    reuse_value: float
    fresh_value: float
    scratch_on: str
    scratch_margin: float
    reason: str
    score: str = "correct"  # the per-image score the difference is measured in (judge.evidence)
    se: float | None = None  # the standard error of ``difference`` (what the ``se`` rule counts in)

    @property
    def reuses(self) -> bool:
        return self.choice is NetworkChoice.REUSE

    def to_dict(self) -> dict:
        return asdict(self) | {"choice": self.choice.value, "ci": list(self.ci), "rule": rule_text(self.scratch_on, self.scratch_margin, self.score)}

    @classmethod
    def from_dict(cls, doc: dict) -> NetworkDecision:
        fields = {k: doc[k] for k in ("difference", "n", "reuse_value", "fresh_value", "scratch_on", "scratch_margin", "reason")}
        return cls(choice=NetworkChoice(doc["choice"]), ci=tuple(doc["ci"]), score=doc.get("score", "correct"),
                   se=doc.get("se"), **fields)  # fmt: skip


def rule_text(scratch_on: str, margin: float, score: str = "correct") -> str:
    """The network rule in words, as plan.json and the report print it.

    >>> rule_text("se", 0.5, "true-prob")[:120]
    'train from scratch when the mean of (S-initialised minus freshly initialised held-out true-prob score, cross-fitted on t'
    """
    if scratch_on == "never":
        return "always reuse S (the network decision is off)"
    what = "the upper end of the 95% CI" if scratch_on == "ci" else "the mean"
    measured = "held-out score" if score == "correct" else f"held-out {score} score"
    below = f"-{margin:g} standard errors" if scratch_on == "se" else _below(margin)
    return (f"train from scratch when {what} of (S-initialised minus freshly initialised {measured}, "
            f"cross-fitted on the shots) is below {below}; otherwise, ties included, reuse S")  # fmt: skip


def _below(margin: float) -> str:
    return f"-{margin:g}" if margin else "0"


def says_scratch(difference: float, ci: tuple[float, float], *, scratch_on: str, scratch_margin: float,
                 se: float | None = None) -> bool:  # fmt: skip
    """The network rule on a measured difference (reuse minus fresh), its CI and standard error: True trains
    from scratch.

    >>> says_scratch(-0.06, (-0.2, 0.08), scratch_on="mean", scratch_margin=0.05)
    True
    >>> says_scratch(-0.06, (-0.2, 0.08), scratch_on="ci", scratch_margin=0.05)
    False
    >>> says_scratch(-0.02, (-0.1, 0.06), scratch_on="se", scratch_margin=0.5, se=0.04), says_scratch(
    ...     -0.03, (-0.1, 0.06), scratch_on="se", scratch_margin=0.5, se=0.04)
    (False, True)
    """
    if scratch_on == "se":
        if se is None:
            raise ValueError("the 'se' rule needs the difference's standard error")
        return difference < -scratch_margin * se if se > 0 else difference < 0
    judged = {"mean": difference, "ci": ci[1], "never": float("inf")}[scratch_on]
    return judged < -scratch_margin


def decide_network(
    evidence: NetworkEvidence, *, scratch_on: str, scratch_margin: float, bounds: Bounds | None = None,
    bootstrap: int = 1000, seed: int = 0, score: str = "correct",
) -> NetworkDecision:  # fmt: skip
    """Apply the network rule (module doc) to the cross-fitted evidence measured in ``score``.

    ``bounds``: the range of a difference of the task's own scores (``correct``); other scores know theirs.
    """
    score = evidence.scored_in(score)  # 0/1 for evidence from before outputs were kept, PSNR for reconstruction
    reuse, fresh = evidence.scores(score)
    diffs = reuse - fresh
    if score != "correct":
        bounds = difference_bounds(SCORE_BOUNDS[score])
    mean = float(diffs.mean())
    se = float(diffs.std() / len(diffs) ** 0.5) if len(diffs) > 1 else 0.0  # torch's std: n - 1
    ci = mean_ci(diffs, bootstrap, seed, bounds)
    scratch = says_scratch(mean, ci, scratch_on=scratch_on, scratch_margin=scratch_margin, se=se)
    cut = f"{-scratch_margin * se:+.3f} ({scratch_margin:g} standard errors)" if scratch_on == "se" else _below(scratch_margin)
    scored = "" if score == "correct" else f", {score} score"
    measured = f"reuse minus scratch {mean:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] on {len(diffs)} held-out shots{scored}"
    if scratch:
        reason = f"scratch: {measured}, below {cut}"
    elif scratch_on != "never" and ci[0] > 0:
        reason = f"reuse: {measured}, clearly better"
    elif scratch_on != "never":
        reason = f"reuse: {measured}, not below {cut} (ties reuse S)"
    else:
        reason = f"reuse: the network decision is off ({measured})"
    return NetworkDecision(
        choice=NetworkChoice.SCRATCH if scratch else NetworkChoice.REUSE,
        difference=mean, ci=ci, n=len(diffs),
        reuse_value=float(reuse.mean()), fresh_value=float(fresh.mean()),
        scratch_on=scratch_on, scratch_margin=scratch_margin, reason=reason, score=score, se=se,
    )  # fmt: skip
