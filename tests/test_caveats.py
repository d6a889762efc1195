import math

import numpy as np
import pytest
from scipy import stats

from paramreuse.judge.caveats import chance_caveat, images_needed, resolvable_drop, validation_caveat
from paramreuse.tasks import CLASSIFICATION, RECONSTRUCTION, SEGMENTATION


def test_resolvable_drop_is_where_the_ci_of_a_one_way_flip_touches_zero():
    z = stats.norm.ppf(0.975)
    for n in (20, 100, 500):
        d = resolvable_drop(n)
        # a drop d made of images flipping one way: per-image differences are 1 (fraction d) or 0
        flips = round(d * 10**6)
        diffs = np.concatenate([np.ones(flips), np.zeros(10**6 - flips)])
        half = z * diffs.std() / math.sqrt(n)
        assert diffs.mean() == pytest.approx(half, rel=1e-3)
    assert resolvable_drop(100, spread=0.3) == pytest.approx(z * 0.3 / 10)
    n = images_needed(0.02)
    assert resolvable_drop(n) <= 0.02 < resolvable_drop(n - 1)
    n = images_needed(0.5, spread=2.0)
    assert resolvable_drop(n, spread=2.0) <= 0.5 < resolvable_drop(n - 1, spread=2.0)


def test_twenty_images_cannot_resolve_two_points():
    warning = validation_caveat(20, 0.02)
    assert warning is not None
    assert "20 images" in warning and "0.050" in warning and "0.161" in warning and "0.02" in warning
    assert f"at least {images_needed(0.02)} images" in warning and images_needed(0.02) == 189
    assert validation_caveat(500, 0.02) is None
    assert validation_caveat(200, 0.05) is None and validation_caveat(50, 0.05) is not None
    assert "empty" in validation_caveat(0, 0.02)


def test_validation_caveat_of_continuous_metrics_needs_their_spread():
    assert validation_caveat(20, 0.5, metric="psnr", units="dB") is None  # nothing known about the spread
    warning = validation_caveat(20, 0.5, metric="psnr", units="dB", spread=2.0)
    assert warning is not None and "0.877 dB" in warning and "tolerance 0.5 dB" in warning
    assert validation_caveat(400, 0.5, metric="psnr", units="dB", spread=2.0) is None


def test_chance_caveat_fires_at_chance_only():
    warning = chance_caveat("T_full", 0.21, CLASSIFICATION, 5)
    assert warning is not None and "T_full" in warning and "0.210" in warning and "1/5 = 0.200" in warning
    assert chance_caveat("S", 0.18, "classification", 5) is not None  # below chance counts too
    assert chance_caveat("S", 0.80, CLASSIFICATION, 5) is None
    assert chance_caveat("S", 0.56, CLASSIFICATION, 2) is None and chance_caveat("S", 0.54, CLASSIFICATION, 2)
    assert chance_caveat("S", 0.30, CLASSIFICATION, 5, margin=0.15) is not None


def test_chance_caveat_for_segmentation_and_reconstruction():
    assert "dice 0.010" in chance_caveat("T_full", 0.01, SEGMENTATION, 2)
    assert chance_caveat("T_full", 0.40, SEGMENTATION, 2) is None
    assert chance_caveat("S", 3.0, RECONSTRUCTION, 1) is None  # PSNR has no chance level
