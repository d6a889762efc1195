"""Per-image scores of held-out evidence, finer than 0/1, and the outputs kept to replay them.

The network decision compares two models (S-initialised and freshly initialised training) on the
few held-out shots of each cross-fit fold. Scoring each image 0 or 1 throws away how sure a model
was: on 50 images the paired difference then has a 95% CI about 0.28 wide (bench/README.md,
"Limits"). Continuous per-image scores see more (Dinga et al. 2019), with one pitfall: S-initialised
networks are often better calibrated than fresh ones, so a raw log-loss favours S even without an
accuracy gain. Hence the candidates:

- ``correct``: 1 when the arg-max is right, else 0 (the metric itself; segmentation: hard Dice);
- ``brier``: 1 - half the squared distance of the probabilities to the one-hot label, in [0, 1]
  (bounded, so one confident mistake costs at most 1);
- ``true-prob``: the probability given to the true class (segmentation: the mean over pixels);
- ``log-loss-ts``: minus the log-loss after temperature scaling (Guo et al. 2017), one temperature per
  arm and fold fitted on that fold's held-out images, so that calibration alone decides nothing;
- ``soft-dice`` (segmentation): Dice of the foreground probabilities against the masks.

What is kept per held-out image (:func:`held_out_outputs`) is enough to replay every candidate
without training again: classification keeps the log-probabilities and the label, segmentation
and reconstruction the per-image values of each candidate (per-pixel maps would not fit in a
result file).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from paramreuse.tasks import Task

CLASSIFICATION_SCORES = ("correct", "brier", "true-prob", "log-loss-ts")
SEGMENTATION_SCORES = ("correct", "brier", "true-prob", "soft-dice")
SWEEP_SCORES = ("correct", "brier", "true-prob", "soft-dice")  # from one model's outputs alone: no temperature to fit
SCORE_BOUNDS = {"correct": (0.0, 1.0), "brier": (0.0, 1.0), "true-prob": (0.0, 1.0), "soft-dice": (0.0, 1.0),
                "log-loss-ts": (None, 0.0)}  # fmt: skip
DIGITS = 5  # log-probabilities are kept to 5 decimals: far below any difference the rule looks at


def scores_for(task: Task) -> tuple[str, ...]:
    """The candidate scores a task's evidence can be replayed with."""
    if task.name == "classification":
        return CLASSIFICATION_SCORES
    if task.name == "segmentation":
        return SEGMENTATION_SCORES
    return ("correct",)  # reconstruction: PSNR is continuous already


def held_out_outputs(task: Task, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
    """What one arm's held-out images keep: log-probabilities and labels, or every candidate's per-image value."""
    if task.name == "classification":
        log_probs = F.log_softmax(outputs.double(), dim=1)
        return {"log_probs": [[round(v, DIGITS) for v in row] for row in log_probs.tolist()],
                "labels": targets.tolist()}  # fmt: skip
    values = {name: output_scores(task, outputs, targets, name) for name in scores_for(task)}
    return {"scores": {name: [round(float(v), DIGITS) for v in value] for name, value in values.items()}}


def sweep_score(task: Task, score: str) -> str:
    """The score a replacement sweep on ``task`` reads when ``score`` is asked: ``correct`` for reconstruction
    (its per-image PSNR is continuous already) and wherever the task has no such score."""
    return score if score in SWEEP_SCORES and score in scores_for(task) else "correct"


def output_scores(task: Task, outputs: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """Per-image values of ``score`` from one model's raw outputs (segmentation: the mean over pixels).

    >>> from paramreuse.tasks import CLASSIFICATION
    >>> out, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    >>> [output_scores(CLASSIFICATION, out, y, s).round(decimals=3).tolist() for s in ("correct", "true-prob")]
    [[1.0, 0.0], [0.881, 0.269]]
    """
    if score == "correct":
        return task.scores(outputs, targets)
    if score not in SWEEP_SCORES or score not in scores_for(task):
        raise ValueError(f"score {score!r} cannot be read from {task.name} outputs; use one of "
                         f"{', '.join(s for s in scores_for(task) if s in SWEEP_SCORES)}")  # fmt: skip
    probs = F.softmax(outputs.double(), dim=1)
    onehot = F.one_hot(targets.long(), probs.shape[1]).movedim(-1, 1).double()
    if score == "soft-dice":
        return _soft_dice(probs[:, 1:], onehot[:, 1:])
    per_pixel = (probs * onehot).sum(1) if score == "true-prob" else 1 - ((probs - onehot) ** 2).sum(1) / 2
    return per_pixel.flatten(1).mean(1) if per_pixel.dim() > 1 else per_pixel


def _soft_dice(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of foreground probabilities against one-hot masks (1 where both are empty)."""
    inter = (probs * onehot).flatten(1).sum(1)
    total = probs.flatten(1).sum(1) + onehot.flatten(1).sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1e-12), torch.ones_like(total))


def image_scores(kept: dict, score: str) -> np.ndarray:
    """One arm's per-image values of ``score`` from what :func:`held_out_outputs` kept (one fold).

    >>> kept = {"log_probs": [[math.log(0.9), math.log(0.1)], [math.log(0.4), math.log(0.6)]], "labels": [0, 0]}
    >>> image_scores(kept, "correct").tolist(), image_scores(kept, "true-prob").round(2).tolist()
    ([1.0, 0.0], [0.9, 0.4])
    >>> image_scores(kept, "brier").round(2).tolist()
    [0.99, 0.64]
    """
    if "scores" in kept:
        if score not in kept["scores"]:
            raise ValueError(f"score {score!r} was not kept for this task; use one of {', '.join(kept['scores'])}")
        return np.asarray(kept["scores"][score], dtype=np.float64)
    log_probs = torch.tensor(kept["log_probs"], dtype=torch.float64)
    labels = torch.tensor(kept["labels"], dtype=torch.long)
    if score == "correct":
        return (log_probs.argmax(1) == labels).double().numpy()
    if score == "true-prob":
        return log_probs.exp().gather(1, labels[:, None]).squeeze(1).numpy()
    if score == "brier":
        onehot = F.one_hot(labels, log_probs.shape[1]).double()
        return (1 - ((log_probs.exp() - onehot) ** 2).sum(1) / 2).numpy()
    if score == "log-loss-ts":
        return -F.cross_entropy(log_probs / temperature(log_probs, labels), labels, reduction="none").numpy()
    raise ValueError(f"unknown score {score!r}; use one of {', '.join(CLASSIFICATION_SCORES)}")


def temperature(log_probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the log-loss of ``log_probs`` on ``labels`` (scipy, bounded search)."""

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(log_probs / math.exp(log_t), labels))

    return math.exp(minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded").x)


def paired_scores(record: dict, score: str) -> tuple[np.ndarray, np.ndarray]:
    """(reuse, fresh) per-image values of ``score`` over every fold of a kept evidence record."""
    reuse = [image_scores(fold["reuse"], score) for fold in record["folds"]]
    fresh = [image_scores(fold["fresh"], score) for fold in record["folds"]]
    return np.concatenate(reuse), np.concatenate(fresh)
