"""Layer inventory and pairing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paramreuse.errors import ParamreuseError
from paramreuse.models import build_model
from paramreuse.models.units import GraphError, PairingError, group_values, inventory, pair_units, trace


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.bn(self.conv(x))
        if x.sum() > 0:
            x = x.relu()
        return self.fc(x.mean((2, 3)))


class PreActivation(nn.Module):
    """A norm that acts on the input (no conv before it), then a conv without a norm."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_builtin_cnn_units_and_groups():
    units = inventory(build_model("builtin:cnn?width=4", 1, 5))
    assert [u.name for u in units] == [f"features.{i}.0" for i in (0, 1, 3, 4, 6, 7)] + ["fc.0", "head"]
    assert [u.kind for u in units] == ["conv2d"] * 6 + ["linear"] * 2
    first = units[0]
    assert first.norm == "features.0.1" and first.shape == (4, 1, 3, 3)
    assert first.group_names == ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats")
    assert first.group("bn.stats").keys == ("features.0.1.running_mean", "features.0.1.running_var")
    assert first.group("bn.stats").shapes == ((4,), (4,))
    assert units[-1].norm is None and units[-1].group_names == ("conv.weight", "conv.bias")
    with pytest.raises(KeyError):
        units[-1].group("bn.stats")


def test_resnet18_units_follow_the_graph_and_pair_downsample_with_its_norm():
    units = inventory(build_model("torchvision:resnet18", 3, 5))
    by_name = {u.name: u for u in units}
    assert len(units) == 21 and units[0].name == "conv1" and units[-1].name == "fc"
    assert by_name["layer2.0.downsample.0"].norm == "layer2.0.downsample.1"
    assert by_name["layer1.0.conv2"].norm == "layer1.0.bn2"
    assert "conv.bias" not in by_name["conv1"].group_names  # torchvision convs have no bias
    assert all(u.norm is not None for u in units[:-1])


def test_untraceable_model_falls_back_to_module_order():
    model = Untraceable()
    with pytest.raises(GraphError):
        trace(model)
    units = inventory(model)
    assert [(u.name, u.norm) for u in units] == [("conv", "bn"), ("fc", None)]


def test_a_norm_on_the_input_is_a_unit_of_its_own():
    units = inventory(PreActivation())
    assert [(u.name, u.kind, u.norm) for u in units] == [("bn", "batchnorm2d", None), ("conv", "conv2d", None)]
    assert units[0].group_names == ("bn.weight", "bn.bias", "bn.stats")


def test_smp_unet_inventory_covers_encoder_decoder_and_head():
    units = inventory(build_model("smp:Unet/resnet18", 3, 2))
    names = [u.name for u in units]
    assert names[0] == "encoder.conv1" and names[-1] == "segmentation_head.0"
    assert any(n.startswith("decoder.") for n in names)


def test_pair_units_returns_the_shared_inventory():
    a, b = build_model("builtin:cnn?width=4", 1, 5), build_model("builtin:cnn?width=4", 1, 5)
    assert pair_units(a, b) == inventory(a)


def test_pairing_error_names_the_differing_shapes_on_one_line():
    a, b = build_model("builtin:cnn?width=4", 1, 5), build_model("builtin:cnn?width=8", 1, 5)
    with pytest.raises(PairingError) as info:
        pair_units(a, b)
    message = str(info.value)
    assert isinstance(info.value, ParamreuseError) and "\n" not in message
    assert "features.0.0.weight (4, 1, 3, 3) vs (8, 1, 3, 3)" in message


def test_pairing_error_for_a_different_head():
    a, b = build_model("builtin:cnn?width=4", 1, 5), build_model("builtin:cnn?width=4", 1, 10)
    with pytest.raises(PairingError, match=r"head.weight \(5, 16\) vs \(10, 16\)"):
        pair_units(a, b)


def test_pairing_error_for_different_architectures():
    a, b = build_model("builtin:cnn?width=4", 3, 5), build_model("torchvision:resnet18", 3, 5)
    with pytest.raises(PairingError, match="features.0.0 conv2d .* vs conv1 conv2d"):
        pair_units(a, b)


def test_group_values_flattens_and_concatenates_in_float64():
    model = build_model("builtin:cnn?width=4", 1, 5)
    group = inventory(model)[0].group("bn.stats")
    values = group_values(model.state_dict(), group)
    assert values.dtype == torch.float64 and values.shape == (8,)
    assert torch.equal(values, torch.cat([torch.zeros(4), torch.ones(4)]).double())
