"""Statistics shared by every stage: bootstrap confidence intervals of paired differences."""

from __future__ import annotations

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
