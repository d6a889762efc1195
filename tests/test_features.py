"""Per-layer features: pooled unit outputs after the norm, the head's input and the logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from paramreuse.errors import ParamreuseError
from paramreuse.rank.features import extract_features, feature_modules
from tests.conftest import synthetic_set

UNITS = ("features.0.0", "features.1.0", "features.3.0", "features.4.0", "features.6.0", "features.7.0", "fc.0")


@pytest.fixture(scope="module")
def images():
    return synthetic_set(40, seed=3).x


def test_every_unit_but_the_head_in_execution_order(trained_pair, images):
    s, _ = trained_pair
    feats = extract_features(s, images)
    assert feats.layers == UNITS and feats.head == "head"
    assert feature_modules(s)["features.0.0"] == "features.0.1"  # the unit's norm
    assert [feats.per_layer[u].shape for u in UNITS] == [(40, w) for w in (4, 4, 8, 8, 16, 16, 16)]
    assert feats.penultimate.shape == (40, 16) and feats.logits.shape == (40, 5) and len(feats) == 40


@torch.no_grad()
def test_features_are_pooled_after_the_norm_and_before_the_inplace_relu(trained_pair, images):
    s, _ = trained_pair
    s.eval()
    feats = extract_features(s, images)
    block = s.features[0]
    expected = block[1](block[0](images)).mean((2, 3)).numpy()
    np.testing.assert_allclose(feats.per_layer["features.0.0"], expected, rtol=1e-5, atol=1e-6)
    assert (feats.per_layer["features.0.0"] < 0).any()  # an in-place ReLU would have clipped these
    trunk = s.features(images)
    np.testing.assert_allclose(feats.per_layer["fc.0"], s.fc[0](trunk).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.penultimate, s.fc(trunk).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.logits, s(images).numpy(), rtol=1e-5, atol=1e-6)


def test_source_predictions_and_batching(trained_pair, images):
    s, _ = trained_pair
    whole, batched = extract_features(s, images), extract_features(s, images, batch_size=7)
    for name in UNITS:
        np.testing.assert_allclose(whole.per_layer[name], batched.per_layer[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.source_probs.sum(1), 1.0, rtol=1e-6)
    assert (whole.source_labels == whole.logits.argmax(1)).all()


def test_model_mode_and_hooks_are_restored(trained_pair, images):
    s, _ = trained_pair
    s.train()
    try:
        extract_features(s, images[:8])
        assert s.training
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in s.modules())
    finally:
        s.eval()


def test_a_model_that_is_not_a_classifier_is_refused(images):
    segmenter = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    with pytest.raises(ParamreuseError, match="N x classes"):
        extract_features(segmenter, images[:4])
