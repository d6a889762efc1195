"""Statistics shared by every stage: bootstrap intervals of paired differences, t-intervals and tests over seeds."""

from __future__ import annotations

import math
import statistics

import numpy as np
import torch
from scipy import stats


def mean_ci(diffs: torch.Tensor | np.ndarray, n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap CI of the mean of paired differences (scipy.stats.bootstrap).

    A constant sample (or a single value) has the degenerate interval (mean, mean).
    """
    d = diffs.numpy() if isinstance(diffs, torch.Tensor) else np.asarray(diffs, dtype=np.float64)
    if len(d) < 2 or np.all(d == d[0]):
        return float(d.mean()), float(d.mean())
    res = stats.bootstrap(
        (d,), np.mean, n_resamples=n_resamples, confidence_level=0.95, method="percentile",
        random_state=np.random.default_rng(seed), vectorized=True,
    )  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_interval(values: list[float]) -> tuple[float, float]:
    """95% Student-t interval of the mean over seeds (degenerate for one seed)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def paired_test(a: list[float], b: list[float]) -> dict:
    """Two-sided paired t-test over seeds (scipy.stats.ttest_rel); p is None when undefined."""
    diffs = [x - y for x, y in zip(a, b)]
    if len(diffs) < 2 or statistics.pstdev(diffs) == 0:
        return {"p": None, "test": "paired t-test (undefined: identical or single differences)", "mean_diff": statistics.fmean(diffs)}
    res = stats.ttest_rel(a, b)
    return {"p": float(res.pvalue), "test": "paired t-test over seeds (scipy.stats.ttest_rel)", "mean_diff": statistics.fmean(diffs)}
