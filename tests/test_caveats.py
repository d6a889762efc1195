import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

from paramreuse.judge.caveats import (
    chance_caveats,
    chance_level,
    chance_warnings,
    images_needed,
    resolvable_drop,
    validation_caveat,
)
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


def test_a_chance_caveat_fires_at_chance_only():
    warning = chance_caveats({"T_full": 0.21}, CLASSIFICATION, 5)
    assert warning is not None and "T_full" in warning and "0.210" in warning and "1/5 = 0.200" in warning
    assert chance_caveats({"S": 0.18}, "classification", 5) is not None  # below chance counts too
    assert chance_caveats({"S": 0.80}, CLASSIFICATION, 5) is None
    assert chance_caveats({"S": 0.56}, CLASSIFICATION, 2) is None and chance_caveats({"S": 0.54}, CLASSIFICATION, 2)
    assert chance_caveats({"S": 0.30}, CLASSIFICATION, 5, margin=0.15) is not None


def test_a_chance_caveat_for_segmentation_and_reconstruction():
    assert "dice 0.010" in chance_caveats({"T_full": 0.01}, SEGMENTATION, 2)
    assert chance_caveats({"T_full": 0.40}, SEGMENTATION, 2) is None
    assert chance_caveats({"S": 3.0}, RECONSTRUCTION, 1) is None  # PSNR has no chance level


def _side(kind, outputs: int, targets: torch.Tensor) -> SimpleNamespace:
    """What chance_warnings reads of a TaskData: its task, outputs and test targets."""
    test = SimpleNamespace(y=targets, mask=targets, x=targets)
    return SimpleNamespace(kind=kind, num_outputs=outputs, test=test)


def test_chance_warnings_name_every_model_at_chance_with_the_level_and_threshold():
    source = _side(CLASSIFICATION, 5, torch.arange(5))
    target = _side(CLASSIFICATION, 5, torch.arange(5))
    # the --quick run of issue 21: T and T_scratch below chance, S fine, the plan near chance
    metrics = {"source": 0.93, "target": 0.149, "scratch": 0.180, "full": 0.61}
    strategies = {"plan": 0.21, "scratch": 0.24, "finetune-all": 0.26}
    found = chance_warnings(source, target, metrics, strategies, seeds=2)
    assert len(found) == 1
    line = found[0]
    for named in ("T accuracy 0.149", "T_scratch accuracy 0.180", "transfer plan (mean of 2 seeds) accuracy 0.210",
                  "transfer scratch (mean of 2 seeds) accuracy 0.240"):  # fmt: skip
        assert named in line
    assert "finetune-all" not in line and "T_full" not in line and "S (" not in line  # 0.26 > 0.25: not near chance
    assert "chance 1/5 = 0.200" in line and "at or below 0.250" in line and "margin 0.05" in line and "--steps" in line
    # S and T_full at chance: each its own line, with its own fix
    found = chance_warnings(source, target, metrics | {"source": 0.2, "full": 0.22}, {}, seeds=2)
    assert [w.split(": at or below")[0] for w in found] == [
        "S (on its own test set) accuracy 0.200", "T accuracy 0.149, T_scratch accuracy 0.180", "T_full accuracy 0.220"]
    assert "[training.source]" in found[0] and "[training.full]" in found[2]
    assert chance_warnings(None, target, {"source": None, "target": 0.9, "scratch": 0.9, "full": 0.9}, {}, seeds=2) == []


def test_the_chance_of_dice_is_the_best_constant_mask():
    masks = torch.zeros(4, 8, 8, dtype=torch.long)
    masks[:, :4] = 1  # half of every image is foreground: all-foreground scores 2p / (1 + p) = 2/3
    assert chance_level(SEGMENTATION, 2, masks) == pytest.approx(2 / 3)
    assert chance_level(SEGMENTATION, 2) == 0.0  # no masks: the empty mask
    line = chance_caveats({"T": 0.70}, SEGMENTATION, 2, chance=chance_level(SEGMENTATION, 2, masks))
    assert line is not None and "chance 0.667, the best constant mask" in line and "at or below 0.717" in line
    assert chance_caveats({"T": 0.72}, SEGMENTATION, 2, chance=2 / 3) is None
    assert chance_level(RECONSTRUCTION, 1, masks) is None
