import numpy as np
import pytest
import torch

from paramreuse.stats import mean_ci, paired_test, t_interval


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


def test_statistics_helpers_against_references():
    import numpy as np
    from scipy import stats

    values = [0.8, 0.82, 0.79, 0.85, 0.81]
    lo, hi = t_interval(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert (lo, hi) == pytest.approx((np.mean(values) - half, np.mean(values) + half))
    a, b = [0.9, 0.8, 0.85], [0.7, 0.72, 0.6]
    assert paired_test(a, b)["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert paired_test(a, a)["p"] is None
