"""Reference tests: every transferability score against an independent computation from its paper.

No published numeric LogME value for a reproducible input could be found (the LogME
repository, github.com/thuml/LogME, has no tests and its README's numbers need FGVC-Aircraft
features); LogME is checked instead against a brute-force grid over (alpha, beta) of the
paper's evidence formula and against scikit-learn's independent MacKay evidence
implementation, ``sklearn.linear_model.BayesianRidge`` (``scores_``, the log marginal
likelihood), which is the same model with the hyper-priors switched off.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.linear_model import BayesianRidge, LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from paramreuse.errors import ParamreuseError
from paramreuse.rank import scores as S


def blobs(n: int, d: int, c: int, sep: float = 1.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters, every class present (labels dealt round-robin, then shuffled)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    return rng.normal(size=(c, d))[y] * sep + rng.normal(size=(n, d)), y


# ---- LogME -------------------------------------------------------------------------------


def evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """You et al. 2021, eq. (2), per sample, with explicit matrices: A = aI + bFᵀF, m = bA⁻¹Fᵀt."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ t)
    log_l = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - n / 2 * np.log(2 * np.pi)
             - beta / 2 * np.sum((f @ m - t) ** 2) - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2)  # fmt: skip
    return log_l / n


def grid_max(f: np.ndarray, t: np.ndarray) -> float:
    """Brute force: a log grid over (alpha, beta) from 1e-6 to 1e8, refined twice around its best cell."""
    la = lb = np.linspace(-6, 8, 29)
    for _ in range(3):
        values = np.array([[evidence(f, t, 10.0**a, 10.0**b) for b in lb] for a in la])
        i, j = np.unravel_index(values.argmax(), values.shape)
        da, db = la[1] - la[0], lb[1] - lb[0]
        la, lb = np.linspace(la[i] - da, la[i] + da, 15), np.linspace(lb[j] - db, lb[j] + db, 15)
    return float(values.max())


def logme_by_grid(f: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([grid_max(f, (y == c).astype(float)) for c in np.unique(y)]))


def logme_by_sklearn(f: np.ndarray, y: np.ndarray) -> float:
    per_class = []
    for c in np.unique(y):
        model = BayesianRidge(fit_intercept=False, alpha_1=0, alpha_2=0, lambda_1=0, lambda_2=0,
                              compute_score=True, tol=1e-12, max_iter=20000)  # fmt: skip
        per_class.append(model.fit(f, (y == c).astype(float)).scores_[-1] / len(f))
    return float(np.mean(per_class))


@pytest.mark.parametrize("n,d", [(60, 6), (25, 40)], ids=["N>D", "N<D"])
def test_logme_is_the_maximum_of_the_evidence_over_a_grid(n, d):
    f, y = blobs(n, d, 3, seed=n)
    solver, grid = S.logme(f, y), logme_by_grid(f, y)
    assert solver >= grid - 1e-9  # the fixed point is at least as good as any grid point
    assert solver - grid < 1e-4  # and the grid, refined, reaches it


@pytest.mark.parametrize("n,d,c", [(80, 8, 4), (20, 50, 4), (30, 30, 2)])
def test_logme_matches_sklearn_bayesian_ridge_evidence(n, d, c):
    f, y = blobs(n, d, c, seed=d)
    assert S.logme(f, y) == pytest.approx(logme_by_sklearn(f, y), abs=1e-6)


def test_logme_ranks_informative_features_above_noise():
    f, y = blobs(100, 5, 3, sep=3.0)
    noise = np.random.default_rng(1).normal(size=f.shape)
    assert S.logme(f, y) > S.logme(noise, y) + 0.05


def test_logme_of_features_orthogonal_to_the_labels_is_the_noise_only_model():
    y = np.array([0, 1] * 10)
    f = np.zeros((20, 3))  # nothing to regress on: the evidence of t ~ N(0, 1/beta) at its best beta
    expected = np.mean([-0.5 * (np.log(2 * np.pi * (t @ t) / 20) + 1) for t in (1.0 * (y == 0), 1.0 * (y == 1))])
    assert S.logme(f, y) == pytest.approx(expected)


def test_empty_class_does_not_inflate_logme():
    f, y = blobs(45, 4, 3)
    gap = np.where(y == 2, 7, y)  # ids {0, 1, 7}: classes 2..6 are empty
    assert S.logme(f, gap) == pytest.approx(S.logme(f, y))
    # What the guard prevents: an empty class's all-zero column would add a huge evidence.
    n = len(f)
    zero_column = evidence(f, np.zeros(n), 1.0, 1e6)
    assert zero_column > S.logme(f, y) + 1.0


# ---- LEEP and NCE --------------------------------------------------------------------------


def leep_reference(theta: np.ndarray, y: np.ndarray) -> float:
    """Nguyen et al. 2020, eqs. (1)-(3), with loops over the empirical joint P(y, z)."""
    n, z = theta.shape
    classes = sorted(set(y.tolist()))
    joint = {(c, k): sum(theta[i, k] for i in range(n) if y[i] == c) / n for c in classes for k in range(z)}
    marginal = {k: sum(joint[(c, k)] for c in classes) for k in range(z)}
    total = 0.0
    for i in range(n):
        total += np.log(sum(joint[(y[i], k)] / marginal[k] * theta[i, k] for k in range(z) if marginal[k] > 0))
    return total / n


def nce_reference(z: np.ndarray, y: np.ndarray) -> float:
    """Tran et al. 2019: -H(Y | Z) = -sum_z P(z) H(Y | Z = z), from counts (scipy's entropy)."""
    n, by_z = len(z), Counter(z.tolist())
    return -sum(count / n * entropy(list(Counter(y[z == k].tolist()).values())) for k, count in by_z.items())


def test_leep_matches_the_empirical_joint():
    rng = np.random.default_rng(0)
    theta, y = softmax(rng.normal(size=(40, 6)) * 2, axis=1), rng.integers(0, 3, 40)
    assert S.leep(theta, y) == pytest.approx(leep_reference(theta, y), rel=1e-10)


def test_leep_ignores_a_source_class_without_mass_and_stays_finite():
    rng = np.random.default_rng(1)
    theta, y = softmax(rng.normal(size=(30, 4)), axis=1), rng.integers(0, 3, 30)
    padded = np.hstack([theta, np.zeros((30, 1))])
    assert S.leep(padded, y) == pytest.approx(S.leep(theta, y))
    assert S.leep(padded, np.where(y == 1, 5, y)) == pytest.approx(S.leep(theta, y))  # empty target class


def test_nce_matches_conditional_entropy_and_equals_leep_on_hard_predictions():
    rng = np.random.default_rng(2)
    z, y = rng.integers(0, 5, 60), rng.integers(0, 3, 60)
    assert S.nce(z, y) == pytest.approx(nce_reference(z, y), rel=1e-10)
    assert S.leep(np.eye(5)[z], y) == pytest.approx(S.nce(z, y), rel=1e-10)  # LEEP with one-hot theta is NCE
    assert S.nce(y * 2, y) == pytest.approx(0.0)  # target labels a function of the source labels


# ---- H-scores ------------------------------------------------------------------------------


def between_covariance(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.stack([f[y == y[i]].mean(0) for i in range(len(f))])
    return np.cov(g.T, bias=True)


def test_h_score_matches_explicit_covariances():
    f, y = blobs(90, 5, 3)
    expected = np.trace(np.linalg.inv(np.cov(f.T, bias=True)) @ between_covariance(f, y))  # Bao et al. 2019
    assert S.h_score(f, y) == pytest.approx(expected, rel=1e-8)
    assert 0 < S.h_score(f, y) < 3 - 1


def test_h_score_is_invariant_to_invertible_linear_maps():
    f, y = blobs(60, 4, 3)
    mix = np.random.default_rng(3).normal(size=(4, 4))
    assert S.h_score(f @ mix + 5.0, y) == pytest.approx(S.h_score(f, y), rel=1e-6)


def test_h_score_warns_and_saturates_when_n_is_below_d():
    rng = np.random.default_rng(4)
    f, y = rng.normal(size=(20, 50)), np.arange(20) % 4  # pure noise
    with pytest.warns(S.TransferabilityWarning, match="saturates"):
        plain = S.h_score(f, y)
    assert plain == pytest.approx(4 - 1, abs=1e-6)  # noise reaches the bound: the documented caveat
    shrunk = S.h_score_shrinkage(f, y)
    assert np.isfinite(shrunk) and shrunk < 0.5 * plain  # the shrinkage variant is not fooled


def ledoit_wolf_reference(x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit & Wolf 2004 on centred x: shrink S towards mu I by min(b, d) / d."""
    n, dim = x.shape
    s = x.T @ x / n
    mu = np.trace(s) / dim
    delta = np.sum((s - mu * np.eye(dim)) ** 2)
    spread = sum(np.sum((np.outer(row, row) - s) ** 2) for row in x) / n**2
    a = min(spread, delta) / delta
    return (1 - a) * s + a * mu * np.eye(dim), a


@pytest.mark.parametrize("n,d", [(80, 6), (15, 30)])
def test_h_score_shrinkage_matches_explicit_ledoit_wolf(n, d):
    f, y = blobs(n, d, 3, seed=d)
    centred = f - f.mean(0)
    shrunk, a = ledoit_wolf_reference(centred)
    expected = np.trace(np.linalg.inv(shrunk) @ ((1 - a) * between_covariance(centred, y)))  # Ibrahim et al. 2022
    assert S.h_score_shrinkage(f, y) == pytest.approx(expected, rel=1e-8)


# ---- k-NN and linear probe -------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5])
def test_knn_loo_matches_sklearn_left_out_one_at_a_time(k):
    f, y = blobs(50, 3, 3, sep=1.0)
    hits = [
        KNeighborsClassifier(n_neighbors=k).fit(np.delete(f, i, 0), np.delete(y, i)).predict(f[i : i + 1])[0] == y[i]
        for i in range(len(f))
    ]
    assert S.knn_loo_accuracy(f, y, k) == pytest.approx(np.mean(hits))
    assert S.knn_loo_accuracy(f, y, k, block=7) == S.knn_loo_accuracy(f, y, k)  # blocks change nothing


def test_linear_probe_matches_sklearn_cross_validation_on_the_same_folds():
    f, y = blobs(60, 4, 3, sep=0.7)
    folds = S.probe_folds(y, 5, seed=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = cross_val_predict(model, f, y, cv=PredefinedSplit(folds))
    assert S.linear_probe_accuracy(f, y, folds=5, seed=0) == pytest.approx(np.mean(predicted == y))


def test_probe_folds_are_stratified():
    y = np.repeat([0, 1, 2], [10, 7, 3])
    folds = S.probe_folds(y, 5, seed=1)
    for cls in range(3):
        counts = np.bincount(folds[y == cls], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(folds).max() - np.bincount(folds).min() <= 1


def test_accuracies_separate_signal_from_noise():
    f, y = blobs(60, 4, 3, sep=4.0)
    shuffled = np.random.default_rng(0).permutation(y)
    assert S.knn_loo_accuracy(f, y) > 0.9 and S.linear_probe_accuracy(f, y) > 0.9
    assert S.knn_loo_accuracy(f, shuffled) < 0.6 and S.linear_probe_accuracy(f, shuffled) < 0.6


# ---- edge cases shared by all -----------------------------------------------------------------


def test_single_sample_per_class_is_scored_honestly():
    f, y = blobs(4, 3, 4, sep=5.0)  # one image per class, far apart
    assert S.knn_loo_accuracy(f, y) == 0.0  # the held-out image's class is never among the rest
    assert S.linear_probe_accuracy(f, y) == 0.0
    assert np.isfinite(S.logme(f, y)) and np.isfinite(S.h_score_shrinkage(f, y))
    with pytest.warns(S.TransferabilityWarning, match="smallest class 1"):
        S.h_score(f, y)


@pytest.mark.parametrize("name", list(S.FEATURE_SCORES))
def test_feature_scores_are_invariant_to_empty_classes(name):
    f, y = blobs(40, 3, 4)
    gap = np.where(y == 3, 9, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S.TransferabilityWarning)
        assert S.SCORES[name].function(f, gap) == pytest.approx(S.SCORES[name].function(f, y))


@pytest.mark.parametrize("name", list(S.FEATURE_SCORES))
def test_feature_scores_run_with_n_below_d(name):
    f, y = blobs(12, 40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", S.TransferabilityWarning)
        value = S.SCORES[name].function(f, y)
    low, high = S.SCORES[name].bounds
    assert np.isfinite(value)
    assert (low is None or value >= low - 1e-9) and (high is None or value <= high + 1e-9)


def test_bad_input_raises_one_line_errors():
    f, y = blobs(20, 3, 2)
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ParamreuseError, match="NaN"):
        S.logme(bad, y)
    with pytest.raises(S.ScoreInputError, match="at least 2 classes"):
        S.h_score(f, np.zeros(20, dtype=int))
    with pytest.raises(S.ScoreInputError, match="softmax"):
        S.leep(f, y)  # logits, not probabilities
    with pytest.raises(S.ScoreInputError, match="integer"):
        S.knn_loo_accuracy(f, y.astype(float))
    with pytest.raises(S.ScoreInputError, match="vector of 20"):
        S.logme(f, y[:10])


def test_registry_knows_every_score_and_refuses_duplicates():
    assert set(S.SCORES) == {"logme", "leep", "nce", "hscore", "hscore_shrinkage", "knn_loo", "linear_probe"}
    assert all(info.higher_is_better and info.paper for info in S.SCORES.values())
    with pytest.raises(ValueError, match="already registered"):
        S.register_score(S.SCORES["logme"])
