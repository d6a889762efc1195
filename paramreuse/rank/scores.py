"""Transferability baselines: pure functions of target features (or source predictions) and labels.

Every score is higher-is-better. Conventions shared by all of them:

- **Classes are the labels present.** ``labels`` may use any integer ids; a class with no
  sample (an *empty class*, e.g. id 2 of ``{0, 1, 3}``) is not a class here. This matters for
  LogME: an all-zero one-hot column is fitted perfectly and would inflate the average evidence.
- **N < D** is supported by every score. LogME uses the exact evidence with the D - N zero
  eigenvalues of FᵀF accounted for; the plain H-score then works with a pseudo-inverse and
  *saturates* (any features reach its bound C - 1), so it emits :class:`TransferabilityWarning`;
  the shrinkage H-score is the well-posed choice there.
- **A single sample per class** is scored as what it is: leave-one-out k-NN and the linear
  probe get 0 (the held-out sample's class is absent from the rest), the plain H-score warns
  (no within-class spread to estimate).
- Bad input (non-finite values, shape mismatch, fewer than two classes or samples) raises
  :class:`ScoreInputError`, a one-line :class:`~paramreuse.errors.ParamreuseError`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from paramreuse.errors import ParamreuseError

LOG_2PI = math.log(2 * math.pi)


class ScoreInputError(ParamreuseError):
    """Features, predictions or labels a score cannot use."""


class TransferabilityWarning(UserWarning):
    """A score computed where its estimate is known to be unreliable (said how, in the message)."""


def _labels(labels: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Labels re-indexed 0..C-1 over the classes present, and C."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ScoreInputError(f"labels must be a vector of {n} class ids, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ScoreInputError(f"labels must be integer class ids, got dtype {y.dtype}")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ScoreInputError(f"a transferability score needs at least 2 classes present, got {classes.tolist()}")
    return index, len(classes)


def _features(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ScoreInputError(f"features must be an N x D matrix with N >= 2, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ScoreInputError("features contain NaN or infinite values; check the model's weights and inputs")
    y, c = _labels(labels, len(f))
    return f, y, c


def _one_hot(y: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[y]


# ---- LogME -----------------------------------------------------------------------------


def _evidence(alpha: float, beta: float, sigma: np.ndarray, m2: float, res: float, n: int, d: int) -> float:
    """Log evidence of Bayesian linear regression (You et al. 2021, eq. 2), per sample.

    ``sigma`` holds the min(N, D) eigenvalues of FᵀF; the other D - len(sigma) are 0 and add
    ``log alpha`` each to ``log |A|``.
    """
    log_det = np.log(alpha + beta * sigma).sum() + (d - len(sigma)) * math.log(alpha)
    total = d / 2 * math.log(alpha) + n / 2 * math.log(beta) - n / 2 * LOG_2PI
    return (total - beta / 2 * res - alpha / 2 * m2 - log_det / 2) / n


def _profile(lam: float, x2: np.ndarray, rest: float, sigma: np.ndarray, n: int) -> float:
    """Evidence per sample at alpha = lam * beta, with beta at its best for that ratio (n / q).

    The same marginal likelihood as :func:`_evidence`, written so that it stays exact when
    lam goes to 0 or infinity.
    """
    q = (lam / (lam + sigma) * x2).sum() + rest
    return (-n / 2 * LOG_2PI + n / 2 * math.log(n / q) - n / 2 - np.log1p(sigma / lam).sum() / 2) / n


def _fixed_point(x2, rest, sigma, n: int, d: int, bounds: tuple[float, float], max_iter: int, tol: float) -> float:
    """The paper's fixed-point updates of alpha and beta; the evidence where they stop."""
    lam = 1.0  # alpha / beta, started at alpha = beta = 1 as in the paper
    for _ in range(max_iter):
        gamma = (sigma / (sigma + lam)).sum()
        m2 = (sigma * x2 / (sigma + lam) ** 2).sum()
        res = ((lam / (sigma + lam)) ** 2 * x2).sum() + rest
        new = min(max((gamma / m2) / ((n - gamma) / res), bounds[0]), bounds[1])
        converged = abs(new - lam) <= tol * lam
        lam = new
        if converged:
            break
    gamma = (sigma / (sigma + lam)).sum()
    m2 = (sigma * x2 / (sigma + lam) ** 2).sum()
    res = ((lam / (sigma + lam)) ** 2 * x2).sum() + rest
    beta = (n - gamma) / res
    if not (beta > 0 and np.isfinite(beta)):  # stopped on a boundary: the direct limits cover it
        return -math.inf
    return _evidence(lam * beta, beta, sigma, m2, res, n, d)


def _class_evidence(x2: np.ndarray, rest: float, sigma: np.ndarray, n: int, d: int, max_iter: int, tol: float) -> float:
    """Maximum evidence for one target column.

    ``x2`` are the squared coordinates of the column in the left singular basis of F and
    ``rest`` the squared norm of its part outside F's column space. An interior maximum is
    found by the fixed point. The maximum can also be a limit on the boundary: alpha -> infinity
    (features ignored) or beta -> infinity (an exact fit, the usual case for N <= D); both
    limits are evaluated directly, the ratio alpha / beta bounded to 1e-12..1e12 times the
    largest eigenvalue, and the best of the three is the evidence. (With N > rank(F) and the
    column exactly in F's span the evidence is unbounded; the bound then caps it.)
    """
    scale = float(sigma.max()) if sigma.max() > 0 else 1.0
    bounds = (1e-12 * scale, 1e12 * scale)
    candidates = [_profile(b, x2, rest, sigma, n) for b in bounds]
    if (sigma * x2).sum() > 0:
        candidates.append(_fixed_point(x2, rest, sigma, n, d, bounds, max_iter, tol))
    return max(candidates)


def logme(features: np.ndarray, labels: np.ndarray, max_iter: int = 200, tol: float = 1e-9) -> float:
    """LogME: the mean over classes of the maximum log evidence per sample of a Bayesian linear
    regression from the features to that class's one-hot column.

    You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer
    Learning", ICML 2021 (fixed-point algorithm of the extended version, arXiv 2110.10545).
    Features are used as given (no centring), as in the paper. The evidence keeps the D - N
    zero eigenvalues of FᵀF when N < D (the reference code's fixed-point variant drops them).
    """
    f, y, c = _features(features, labels)
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s**2
    targets = _one_hot(y, c)
    x = u.T @ targets  # coordinates in the left singular basis, one column per class
    norms = (targets**2).sum(0)
    rest = norms - (x**2).sum(0)
    rest = np.where(rest > 1e-10 * norms, rest, 0.0)  # rounding noise of a column inside F's span
    return float(np.mean([_class_evidence(x[:, j] ** 2, rest[j], sigma, n, d, max_iter, tol) for j in range(c)]))


# ---- LEEP and NCE ----------------------------------------------------------------------


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: mean log-likelihood of the target labels under the "dummy" classifier that maps the
    source model's predicted distribution through the empirical P(target | source class).

    Nguyen, Hassner, Seeger, Archambeau, "LEEP: A New Measure to Evaluate Transferability of
    Learned Representations", ICML 2020. ``source_probs``: N x Z softmax outputs of the source
    head on the target images. A source class that receives no probability mass is left out.
    """
    theta = np.asarray(source_probs, dtype=np.float64)
    if theta.ndim != 2 or len(theta) < 2:
        raise ScoreInputError(f"source_probs must be an N x Z matrix with N >= 2, got shape {theta.shape}")
    if not np.isfinite(theta).all() or (theta < 0).any() or not np.allclose(theta.sum(1), 1.0, atol=1e-3):
        raise ScoreInputError("source_probs must be finite probability rows (softmax outputs, not logits)")
    y, c = _labels(labels, len(theta))
    joint = _one_hot(y, c).T @ theta / len(theta)  # P(y, z)
    marginal = joint.sum(0)  # P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = (theta * conditional[y]).sum(1)  # sum_z P(y_i | z) theta_i(z) > 0 for every i
    return float(np.log(expected).mean())


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: negative conditional entropy -H(Y | Z) of the target labels given the source model's
    hard predictions (argmax of its head) on the target images.

    Tran, Nguyen, Hassner, "Transferability and Hardness of Supervised Classification Tasks",
    ICCV 2019. At most 0 (target labels a function of the source predictions).
    """
    z = np.asarray(source_labels)
    y, c = _labels(labels, len(z))
    if z.ndim != 1 or not np.issubdtype(z.dtype, np.integer):
        raise ScoreInputError(f"source_labels must be a vector of integer class ids, got shape {z.shape} {z.dtype}")
    _, z = np.unique(z, return_inverse=True)
    joint = np.zeros((c, z.max() + 1))
    np.add.at(joint, (y, z), 1.0 / len(y))
    conditional = joint / joint.sum(0)  # every column holds at least one sample
    mask = joint > 0
    return float((joint[mask] * np.log(conditional[mask])).sum())


# ---- H-scores --------------------------------------------------------------------------


def _between_covariance(f: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    """Covariance (1/N) of E[f | y]: every sample replaced by its class mean, features centred."""
    counts = np.bincount(y, minlength=c)
    means = (_one_hot(y, c).T @ f) / counts[:, None]
    g = means[y]
    return g.T @ g / len(f)


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: tr(cov(f)⁻¹ cov(E[f | y])), between C - 1 (best) and 0.

    Bao, Li, Huang, Wang, Zamir, Guibas, "An Information-theoretic Approach to Transferability in
    Task Transfer Learning", ICIP 2019. Covariances use 1/N; the inverse is a pseudo-inverse.
    Warns (:class:`TransferabilityWarning`) where N <= D or a class has one sample: the
    estimate then saturates towards C - 1 whatever the features.
    """
    f, y, c = _features(features, labels)
    n, d = f.shape
    counts = np.bincount(y, minlength=c)
    if n <= d or counts.min() < 2:
        warnings.warn(
            f"h_score with N={n}, D={d}, smallest class {counts.min()}: the feature covariance cannot be estimated "
            f"and the score saturates towards its bound {c - 1}; use h_score_shrinkage",
            TransferabilityWarning,
            stacklevel=2,
        )
    f = f - f.mean(0)
    cov = f.T @ f / n
    return float(np.trace(np.linalg.pinv(cov, hermitian=True) @ _between_covariance(f, y, c)))


def h_score_shrinkage(features: np.ndarray, labels: np.ndarray) -> float:
    """Shrinkage H-score: tr(cov_a(f)⁻¹ (1 - a) cov(E[f | y])) with the Ledoit-Wolf estimate
    cov_a = (1 - a) cov(f) + a (tr cov(f) / D) I.

    Ibrahim, Ponomareva, Mazumder, "Newer is not always better: Rethinking transferability
    metrics, their peculiarities, stability and performance", ECML-PKDD 2022. Well-posed for
    N < D; constant features score 0.
    """
    from sklearn.covariance import ledoit_wolf  # heavy: only this score needs it

    f, y, c = _features(features, labels)
    f = f - f.mean(0)
    shrunk, a = ledoit_wolf(f, assume_centered=True)
    between = (1 - a) * _between_covariance(f, y, c)
    return float(np.trace(np.linalg.pinv(shrunk, hermitian=True) @ between))


# ---- accuracies ------------------------------------------------------------------------


def knn_loo_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5, block: int = 1024) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (Euclidean), in [0, 1].

    Each sample is classified by the majority label of its k nearest other samples; ties go to
    the smallest class id (as scikit-learn's KNeighborsClassifier). Ties in distance keep
    sample order. Distances are computed ``block`` rows at a time (memory N x block). A common
    non-parametric baseline (e.g. Kornblith et al., CVPR 2019).
    """
    f, y, c = _features(features, labels)
    n = len(f)
    k = max(1, min(k, n - 1))
    sq = (f**2).sum(1)
    hits = 0
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        dist = sq[rows, None] + sq[None, :] - 2 * f[rows] @ f.T
        dist[np.arange(len(rows)), rows] = np.inf  # leave the sample itself out
        nearest = np.argsort(dist, axis=1, kind="stable")[:, :k]
        votes = np.zeros((len(rows), c))
        np.add.at(votes, (np.repeat(np.arange(len(rows)), k), y[nearest].reshape(-1)), 1.0)
        hits += int((votes.argmax(1) == y[rows]).sum())
    return hits / n


def probe_folds(labels: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id of every sample: each class shuffled with ``seed`` and dealt round-robin.

    Stratified where classes are large enough; a class smaller than ``folds`` lands in as many
    folds as it has samples (so a single sample is always tested with its class unseen).
    """
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    offset = 0
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        fold[members] = (offset + np.arange(len(members))) % folds
        offset += len(members)  # classes continue the deal, so folds stay balanced in size
    return fold


def linear_probe_accuracy(
    features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0, c: float = 1.0
) -> float:
    """Cross-validated accuracy of a standardised L2 logistic regression on the features, in [0, 1].

    The linear-evaluation protocol of representation learning (e.g. Kornblith et al., "Do
    Better ImageNet Models Transfer Better?", CVPR 2019), with ``min(folds, N)`` folds from
    :func:`probe_folds`. A training fold holding one class predicts that class.
    """
    from sklearn.linear_model import LogisticRegression  # heavy: only this score needs it
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f, y, _ = _features(features, labels)
    fold = probe_folds(y, min(folds, len(f)), seed)
    correct = 0
    for k in np.unique(fold):
        train, test = fold != k, fold == k
        if len(np.unique(y[train])) < 2:
            predicted = np.full(test.sum(), y[train][0])
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
            predicted = model.fit(f[train], y[train]).predict(f[test])
        correct += int((predicted == y[test]).sum())
    return correct / len(f)


# ---- registry --------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreInfo:
    """What a score needs and how to read it (``inputs``: features, source_probs or source_labels)."""

    name: str
    function: Callable[..., float]
    inputs: str
    bounds: tuple[float | None, float | None]
    paper: str
    higher_is_better: bool = True


SCORES: dict[str, ScoreInfo] = {}


def register_score(info: ScoreInfo) -> None:
    if info.name in SCORES:
        raise ValueError(f"score {info.name!r} is already registered")
    SCORES[info.name] = info


for _info in (
    ScoreInfo("logme", logme, "features", (None, None), "You et al. 2021"),
    ScoreInfo("leep", leep, "source_probs", (None, 0.0), "Nguyen et al. 2020"),
    ScoreInfo("nce", nce, "source_labels", (None, 0.0), "Tran et al. 2019"),
    ScoreInfo("hscore", h_score, "features", (0.0, None), "Bao et al. 2019"),
    ScoreInfo("hscore_shrinkage", h_score_shrinkage, "features", (0.0, None), "Ibrahim et al. 2022"),
    ScoreInfo("knn_loo", knn_loo_accuracy, "features", (0.0, 1.0), "leave-one-out k-NN"),
    ScoreInfo("linear_probe", linear_probe_accuracy, "features", (0.0, 1.0), "logistic-regression probe"),
):
    register_score(_info)

FEATURE_SCORES = tuple(name for name, info in SCORES.items() if info.inputs == "features")
