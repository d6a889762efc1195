import numpy as np
import pytest
import torch

from paramreuse.stats import clip, difference_bounds, mean_ci, paired_test, seed_interval, t_interval


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


def test_intervals_stay_inside_the_bounds():
    from scipy import stats

    values = [0.99, 0.96, 1.0]  # accuracies near 1: the raw t-interval ends above 1
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / np.sqrt(3)
    raw = (np.mean(values) - half, np.mean(values) + half)
    assert raw[1] > 1.0 and t_interval(values) == pytest.approx(raw)
    assert t_interval(values, (0.0, 1.0)) == pytest.approx((raw[0], 1.0))
    assert t_interval([0.01, 0.0, 0.04], bounds=(0.0, None))[0] == 0.0
    assert difference_bounds((0.0, 1.0)) == (-1.0, 1.0) and difference_bounds((0.0, None)) is None
    assert clip((-3.0, 0.5), (-1.0, 1.0)) == (-1.0, 0.5) and clip((2.0, 3.0), (0.0, 1.0)) == (1.0, 1.0)
    diffs = np.array([1.0] * 9 + [0.0])
    unclipped = mean_ci(diffs, 500, 0)
    assert mean_ci(diffs, 500, 0, bounds=(0.0, 0.95)) == (unclipped[0], min(unclipped[1], 0.95))


def test_two_seeds_give_no_p_value_or_interval():
    from scipy import stats

    a, b = [0.9, 0.8], [0.7, 0.72]
    test = paired_test(a, b)
    assert test["p"] is None and test["test"] == "not enough seeds (2 < 3)" and test["enough_seeds"] is False
    assert test["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b))) and test["n"] == 2
    assert paired_test(a, b, min_seeds=2)["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    a, b = [0.9, 0.8, 0.85], [0.7, 0.72, 0.6]
    three = paired_test(a, b)
    assert three["enough_seeds"] is True and three["p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    short = seed_interval([0.8, 0.9], (0.0, 1.0))
    assert short == {"mean": pytest.approx(0.85), "ci": None, "n": 2, "enough_seeds": False,
                     "note": "not enough seeds (2 < 3)"}  # fmt: skip


def test_seed_interval_matches_scipy_and_the_bounds():
    from scipy import stats

    values = [0.97, 0.99, 1.0, 0.95]
    ref = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    out = seed_interval(values, (0.0, 1.0))
    assert out["enough_seeds"] and out["n"] == 4 and out["mean"] == pytest.approx(np.mean(values))
    assert ref[1] > 1.0 and out["ci"] == pytest.approx([ref[0], 1.0])
    assert seed_interval(values)["ci"] == pytest.approx(list(ref))
