"""The study's paired gain (study.paired_gain) against a numpy computation on the same test set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paramreuse.data import load_task
from paramreuse.models import build_model
from paramreuse.training.loop import paired_gain
from tests.conftest import TINY_ARCH


def _correct(model, data) -> np.ndarray:
    with torch.no_grad():
        return (model.eval()(data.test.x).argmax(1) == data.test.y).numpy().astype(float)


def test_paired_gain_is_the_mean_difference_with_a_ci_around_it(fake_fmnist):
    data = load_task("fashion-mnist", "5-9", shots=5, seed=0)
    torch.manual_seed(0)
    a, b = build_model(TINY_ARCH, 1, 5), build_model(TINY_ARCH, 1, 5)
    diffs = _correct(a, data) - _correct(b, data)
    assert np.any(diffs != 0)  # the two models disagree somewhere: the interval has width
    gain = paired_gain(a, b, data, "cpu", seed=0)
    assert gain["n"] == len(data.test) and gain["mean"] == pytest.approx(diffs.mean())
    low, high = gain["ci"]
    assert -1.0 <= low < gain["mean"] < high <= 1.0
    half = 1.96 * diffs.std(ddof=1) / np.sqrt(len(diffs))  # the bootstrap agrees with the normal interval
    assert low == pytest.approx(diffs.mean() - half, abs=0.04) and high == pytest.approx(diffs.mean() + half, abs=0.04)


def test_paired_gain_of_a_model_over_itself_is_zero(fake_fmnist):
    data = load_task("fashion-mnist", "5-9", shots=5, seed=0)
    torch.manual_seed(1)
    model = build_model(TINY_ARCH, 1, 5)
    gain = paired_gain(model, model, data, "cpu", seed=0)
    assert gain["mean"] == 0.0 and tuple(gain["ci"]) == (0.0, 0.0)
