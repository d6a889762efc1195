import numpy as np
import pytest
import torch

from paramreuse.stats import mean_ci


def test_mean_ci_matches_a_numpy_bootstrap():
    rng = np.random.default_rng(0)
    diffs = torch.from_numpy(rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.6, 0.3], size=500))
    lo, hi = mean_ci(diffs, 2000, seed=0)
    means = diffs.numpy()[rng.integers(0, 500, size=(4000, 500))].mean(1)
    ref_lo, ref_hi = np.percentile(means, [2.5, 97.5])
    assert lo == pytest.approx(ref_lo, abs=0.01) and hi == pytest.approx(ref_hi, abs=0.01)
    assert lo < float(diffs.mean()) < hi


def test_mean_ci_of_a_constant_is_degenerate():
    assert mean_ci(torch.zeros(10)) == (0.0, 0.0)
    assert mean_ci(np.array([0.5])) == (0.5, 0.5)
