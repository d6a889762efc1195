"""Statistics shared by every stage: bootstrap intervals of paired differences, t-intervals and tests over seeds.

A CI or p-value over seeds is a finding only from ``MIN_SEEDS`` seeds on: below that the t-interval
is so wide (t = 12.7 for 2 seeds) and the test so weak that printing them misleads. Intervals of
bounded metrics (accuracy, Dice in [0, 1]) are clipped to the bounds, since the normal
approximation of a t-interval knows nothing of them.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    import torch

MIN_SEEDS = 3
Bounds = tuple[float | None, float | None]  # (low, high); None on a side means unbounded there


def clip(interval: tuple[float, float], bounds: Bounds | None) -> tuple[float, float]:
    """``interval`` kept inside ``bounds`` (either end None: unbounded on that side)."""
    lo, hi = interval
    if bounds is None:
        return lo, hi
    low, high = bounds
    if low is not None:
        lo, hi = max(lo, low), max(hi, low)
    if high is not None:
        lo, hi = min(lo, high), min(hi, high)
    return lo, hi


def difference_bounds(bounds: Bounds | None) -> Bounds | None:
    """Bounds of a difference of two values within ``bounds``: [0, 1] metrics differ by at most [-1, 1]."""
    if bounds is None or bounds[0] is None or bounds[1] is None:
        return None
    return bounds[0] - bounds[1], bounds[1] - bounds[0]


def mean_ci(
    diffs: torch.Tensor | np.ndarray, n_resamples: int = 1000, seed: int = 0, bounds: Bounds | None = None
) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of paired differences (scipy.stats.bootstrap), kept in ``bounds``.

    A constant sample (or a single value) has the degenerate interval (mean, mean).
    """
    d = diffs.numpy() if hasattr(diffs, "numpy") else np.asarray(diffs, dtype=np.float64)  # a tensor as it is
    if len(d) < 2 or np.all(d == d[0]):
        return clip((float(d.mean()), float(d.mean())), bounds)
    res = stats.bootstrap(
        (d,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
        random_state=np.random.default_rng(seed), vectorized=True,
    )  # fmt: skip
    return clip((float(res.confidence_interval.low), float(res.confidence_interval.high)), bounds)


def t_interval(values: list[float], bounds: Bounds | None = None) -> tuple[float, float]:
    """95% Student-t interval of the mean over seeds (degenerate for one seed), kept inside ``bounds``."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return clip((mean, mean), bounds)
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return clip((mean - half, mean + half), bounds)


def not_enough_seeds(n: int, min_seeds: int = MIN_SEEDS) -> str:
    """The note printed instead of a CI or p-value over too few seeds."""
    return f"not enough seeds ({n} < {min_seeds})"


def seed_interval(values: list[float], bounds: Bounds | None = None, *, min_seeds: int = MIN_SEEDS) -> dict:
    """Mean over seeds and its 95% t-interval, the interval only from ``min_seeds`` seeds on.

    Returns:
        ``mean``; ``ci`` ([low, high] inside ``bounds``, or None below ``min_seeds``); ``n``;
        ``enough_seeds``; ``note`` (how the interval was made, or why there is none).
    """
    n = len(values)
    if n < min_seeds:
        return {"mean": statistics.fmean(values) if values else None, "ci": None, "n": n, "enough_seeds": False,
                "note": not_enough_seeds(n, min_seeds)}  # fmt: skip
    return {"mean": statistics.fmean(values), "ci": list(t_interval(values, bounds)), "n": n, "enough_seeds": True,
            "note": f"95% Student-t interval over {n} seeds"}  # fmt: skip


def paired_test(a: list[float], b: list[float], min_seeds: int = MIN_SEEDS) -> dict:
    """Two-sided paired t-test over seeds (scipy.stats.ttest_rel); p is None below ``min_seeds`` or when undefined.

    Returns ``p``, ``test`` (the test, or why there is no p), ``mean_diff`` (mean of a - b),
    ``n`` (pairs) and ``enough_seeds``.
    """
    diffs = [x - y for x, y in zip(a, b)]
    out = {"mean_diff": statistics.fmean(diffs) if diffs else None, "n": len(diffs),
           "enough_seeds": len(diffs) >= min_seeds}  # fmt: skip
    if not out["enough_seeds"]:
        return {"p": None, "test": not_enough_seeds(len(diffs), min_seeds)} | out
    if statistics.pstdev(diffs) == 0:
        return {"p": None, "test": "paired t-test (undefined: identical differences)"} | out
    res = stats.ttest_rel(a, b)
    return {"p": float(res.pvalue), "test": "paired t-test over seeds (scipy.stats.ttest_rel)"} | out
