"""Per-layer distances, null references, lineage and the comparison result."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from paramreuse.align.specs import apply_permutation, permutation_spec, random_permutation
from paramreuse.data import load_task
from paramreuse.errors import ParamreuseError
from paramreuse.judge.kernels import (
    LINEAGE_RULE,
    compare_models,
    cosine,
    detect_lineage,
    layer_distances,
    null_references,
    ratio,
    rms,
    rmse,
)
from paramreuse.models import build_model
from paramreuse.models.units import PairingError, inventory
from paramreuse.training.loop import TrainConfig, train

ARCH = "builtin:cnn?width=4"
DISTANCES = ("rmse_raw", "rmse", "rmse_normalized", "null_position")


def fresh(seed: int, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH, 1, num_classes)


@pytest.fixture(scope="module")
def pairs() -> dict[str, nn.Module]:
    """S trained on Fashion-MNIST 0-4; T fine-tuned from S on 5-9; T trained on 5-9 from its own init."""
    source_task = load_task("fashion-mnist", "0-4", shots=40, seed=0)
    target_task = load_task("fashion-mnist", "5-9", shots=40, seed=0)
    config = TrainConfig(epochs=3, batch_size=32, lr=1e-2)
    source = fresh(0)
    train(source, source_task.train, config, seed=0)
    finetuned = copy.deepcopy(source)
    train(finetuned, target_task.train, TrainConfig(epochs=2, batch_size=32, lr=1e-3), seed=1)
    independent = fresh(1)
    train(independent, target_task.train, config, seed=1)
    return {"source": source.eval(), "finetuned": finetuned.eval(), "independent": independent.eval()}


def test_distances_against_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    na, nb = a.numpy().astype(np.float64).ravel(), b.numpy().astype(np.float64).ravel()
    assert rmse(a, b) == pytest.approx(np.sqrt(np.mean((na - nb) ** 2)))
    assert rms(a) == pytest.approx(np.sqrt(np.mean(na**2)))
    assert cosine(a, b) == pytest.approx(na @ nb / np.linalg.norm(na) / np.linalg.norm(nb))
    assert math.isnan(cosine(a, torch.zeros(3, 4)))
    assert ratio(1.0, 2.0) == 0.5 and ratio(0.0, 0.0) == 0.0 and math.isnan(ratio(1.0, 0.0))


def test_null_reference_is_the_rms_of_the_default_initialiser_for_a_zero_layer():
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16))
    nn.init.zeros_(model[0].weight)
    units = inventory(model)
    nulls = null_references(model, units, draws=3, seed=0)
    fan_in = 8 * 3 * 3
    # kaiming_uniform_(a=sqrt(5)) draws from U(-b, b) with b = 1/sqrt(fan_in): RMS b/sqrt(3)
    assert nulls[("0", "conv.weight")] == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.05)
    assert nulls[("0", "bn.weight")] == 0.0 and nulls[("0", "bn.stats")] == 0.0  # BN resets to its defaults


def test_null_reference_does_not_touch_the_model_or_the_global_rng():
    model = fresh(0)
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(7)
    expected = torch.rand(1)
    torch.manual_seed(7)
    null_references(model, inventory(model))
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_identical_models_are_at_distance_zero():
    model = fresh(0)
    result = compare_models(model, copy.deepcopy(model))
    assert result.lineage == "finetuned" and result.alignment["method"] == "none"
    for layer in result.layers:
        assert all(getattr(layer, d) == 0.0 for d in DISTANCES) and layer.cosine == pytest.approx(1.0)
        for group in layer.groups:
            assert all(getattr(group, d) == 0.0 for d in DISTANCES), (layer.name, group)
            assert math.isnan(group.cosine) or group.cosine == pytest.approx(1.0)


def test_layer_distances_from_state_dicts():
    source, target = fresh(0), fresh(1)
    units = inventory(target)
    nulls = {(u.name, g.name): 1.0 for u in units for g in u.groups}
    layers = layer_distances(source.state_dict(), target.state_dict(), target.state_dict(), units, nulls)
    first = layers[0]
    w_s, w_t = source.features[0][0].weight.detach(), target.features[0][0].weight.detach()
    assert (first.name, first.kind, first.shape) == ("features.0.0", "conv2d", (4, 1, 3, 3))
    assert first.rmse_raw == pytest.approx(rmse(w_s, w_t)) and first.rmse == 0.0  # "aligned" = T itself
    assert first.groups[-1].group == "bn.stats" and first.groups[-1].shape == (2, 4)


def test_permuted_copy_is_detected_as_independent_and_aligned_back(pairs):
    source = pairs["source"]
    spec = permutation_spec(source)
    permuted = apply_permutation(source, spec, random_permutation(spec, seed=1))
    result = compare_models(permuted, source)
    assert result.lineage == "independent" and result.alignment["method"] == "weights"
    assert max(layer.rmse_raw for layer in result.layers) > 0.01
    assert all(group.rmse < 1e-6 for layer in result.layers for group in layer.groups)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert (result.aligned_source.eval()(x) - permuted(x)).abs().max() < 1e-5


def test_finetuned_pair_is_detected_and_left_unaligned(pairs):
    result = compare_models(pairs["source"], pairs["finetuned"])
    assert result.lineage == result.lineage_detected == "finetuned"
    assert result.alignment["method"] == "none" and result.aligned_source is pairs["source"]
    assert all(layer.rmse == layer.rmse_raw for layer in result.layers)
    assert all(layer.null_position < 0.5 for layer in result.layers[:3])


def test_independent_pair_is_detected_and_aligned(pairs):
    result = compare_models(pairs["source"], pairs["independent"])
    assert result.lineage == result.lineage_detected == "independent"
    assert result.alignment["method"] == "weights" and result.alignment["seconds"] > 0
    raw = sum(layer.rmse_raw**2 * math.prod(layer.shape) for layer in result.layers)
    aligned = sum(layer.rmse**2 * math.prod(layer.shape) for layer in result.layers)
    assert aligned < raw


def test_lineage_can_be_stated(pairs):
    stated = compare_models(pairs["source"], pairs["finetuned"], lineage="independent")
    assert (stated.lineage, stated.lineage_detected) == ("independent", "finetuned")
    assert stated.alignment["method"] == "weights"
    stated = compare_models(pairs["source"], pairs["independent"], lineage="finetuned")
    assert stated.alignment["method"] == "none"
    forced = compare_models(pairs["source"], pairs["finetuned"], align="activations", data=torch.randn(16, 1, 28, 28))
    assert forced.alignment["method"] == "activations"


def test_detect_lineage_uses_the_first_kernels(pairs):
    result = compare_models(pairs["source"], pairs["independent"], align="none")
    assert detect_lineage(result.layers) == "independent" and detect_lineage(()) == "independent"
    assert "median of rmse_raw / rmse_null" in LINEAGE_RULE


def test_to_dict_is_the_comparison_json_contract(pairs):
    result = compare_models(pairs["source"], pairs["independent"])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert {"lineage", "lineage_rule", "alignment", "layers"} <= data.keys()
    assert {"method", "seconds"} <= data["alignment"].keys()
    layer = data["layers"][0]
    assert {"name", "kind", "shape", "rmse_raw", "rmse", "rmse_normalized", "rmse_null", "null_position",
            "cosine", "groups"} <= layer.keys()  # fmt: skip
    assert [g["group"] for g in layer["groups"]] == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats"]


def test_bad_requests_raise_one_line_errors(pairs):
    with pytest.raises(PairingError):
        compare_models(fresh(0), fresh(0, num_classes=10))
    with pytest.raises(ParamreuseError, match="unknown alignment"):
        compare_models(fresh(0), fresh(1), align="magic")
    with pytest.raises(ParamreuseError, match="unknown lineage"):
        compare_models(fresh(0), fresh(1), lineage="cousin")
    with pytest.raises(ParamreuseError, match="needs data"):
        compare_models(fresh(0), fresh(1), align="activations")


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        return self.fc((x if x.sum() > 0 else -x).mean((2, 3)))


def test_auto_alignment_of_an_untraceable_pair_falls_back_with_a_note():
    torch.manual_seed(0)
    a, b = Untraceable(), Untraceable()
    result = compare_models(a, b)
    assert result.lineage == "independent" and result.alignment["method"] == "none"
    assert "cannot be traced" in result.alignment["note"]
    with pytest.raises(ParamreuseError, match="cannot be traced"):
        compare_models(a, b, align="weights")
