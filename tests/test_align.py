"""Permutation specs from the graph, weight and activation matching, function preservation."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from paramreuse.align.matching import AlignmentError, align_models
from paramreuse.align.specs import apply_permutation, permutation_spec, random_permutation
from paramreuse.data import ImageSet
from paramreuse.models import build_model
from paramreuse.models.builtin import VGGStyleCNN
from paramreuse.training.loop import TrainConfig, train

CONV_UNITS = (0, 1, 3, 4, 6, 7)  # indices of the conv_bn_relu units in VGGStyleCNN.features


def randomize_norms(model: nn.Module, seed: int) -> nn.Module:
    """Give every batch norm distinct affine values and running statistics, so permutations show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def permute_cnn_by_hand(model: VGGStyleCNN, seed: int) -> VGGStyleCNN:
    """Permute every hidden channel of the builtin CNN, written out without the spec machinery."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    convs = [model.features[i] for i in CONV_UNITS]
    with torch.no_grad():
        for k, unit in enumerate(convs):
            conv, bn = unit[0], unit[1]
            p = torch.randperm(conv.out_channels, generator=g)
            for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[p])
            following = convs[k + 1][0] if k + 1 < len(convs) else model.fc[0]
            following.weight.copy_(following.weight[:, p])
        p = torch.randperm(model.fc[0].out_features, generator=g)
        model.fc[0].weight.copy_(model.fc[0].weight[p])
        model.fc[0].bias.copy_(model.fc[0].bias[p])
        model.head.weight.copy_(model.head.weight[:, p])
    return model


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def max_output_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    a.eval(), b.eval()
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def kernels(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().reshape(-1) for m in model.modules() if isinstance(m, nn.Conv2d)])


@pytest.fixture(scope="module")
def trained_cnn() -> nn.Module:
    """A builtin CNN trained for a few steps on random 16x16 images."""
    g = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randn(256, 1, 16, 16, generator=g), torch.randint(0, 5, (256,), generator=g), tuple("abcde"))
    torch.manual_seed(0)
    model = build_model("builtin:cnn?width=4", 1, 5)
    train(model, data, TrainConfig(epochs=3, batch_size=32, lr=1e-2), seed=0)
    return model.eval()


def test_builtin_cnn_spec_groups():
    spec = permutation_spec(build_model("builtin:cnn?width=4", 1, 5))
    assert len(spec.groups) == 7  # six conv outputs and fc.0's output
    assert spec.group_of("features.0.0.weight", 1) is None  # the network input is never permuted
    assert spec.group_of("head.weight", 0) is None and spec.group_of("head.bias") is None  # nor the head output
    assert spec.group_of("fc.0.weight", 1) == spec.group_of("features.7.0.weight", 0)  # flatten passes channels
    assert spec.group_of("features.0.1.running_var") == spec.group_of("features.0.0.weight")  # BN follows its conv


def test_permuted_cnn_is_far_in_raw_rmse_and_weight_matching_undoes_it(trained_cnn):
    permuted = permute_cnn_by_hand(trained_cnn, seed=1)
    x = torch.randn(8, 1, 16, 16)
    assert max_output_diff(permuted, trained_cnn, x) < 1e-5
    torch.manual_seed(123)
    fresh = build_model("builtin:cnn?width=4", 1, 5)
    rmse_permuted = (kernels(permuted) - kernels(trained_cnn)).pow(2).mean().sqrt()
    rmse_random = (kernels(fresh) - kernels(trained_cnn)).pow(2).mean().sqrt()
    assert rmse_permuted > rmse_random
    result = align_models(permuted, trained_cnn, "weights")
    assert result.method == "weights" and result.seconds > 0
    assert max_param_diff(result.model, trained_cnn) < 1e-6
    assert max_output_diff(result.model, permuted, x) < 1e-5


def test_activation_matching_undoes_a_permutation(trained_cnn):
    permuted = permute_cnn_by_hand(trained_cnn, seed=2)
    data = torch.randn(64, 1, 16, 16)
    result = align_models(permuted, trained_cnn, "activations", data=data)
    assert max_param_diff(result.model, trained_cnn) < 1e-6


def test_alignment_leaves_the_source_untouched(trained_cnn):
    permuted = permute_cnn_by_hand(trained_cnn, seed=3)
    before = copy.deepcopy(permuted.state_dict())
    permuted.train()
    align_models(permuted, trained_cnn, "activations", data=torch.randn(8, 1, 16, 16))
    assert permuted.training and all(torch.equal(before[k], v) for k, v in permuted.state_dict().items())


def test_none_returns_the_source_itself(trained_cnn):
    result = align_models(trained_cnn, trained_cnn, "none")
    assert result.model is trained_cnn and result.to_dict()["method"] == "none"


def test_resnet18_spec_merges_the_residual_stream_and_downsample_branches():
    spec = permutation_spec(build_model("torchvision:resnet18", 3, 5))
    stream1 = spec.group_of("conv1.weight")
    assert {spec.group_of(f"layer1.{b}.conv2.weight") for b in (0, 1)} == {stream1}
    assert spec.group_of("layer1.0.conv1.weight", 1) == stream1 == spec.group_of("layer2.0.downsample.0.weight", 1)
    stream2 = spec.group_of("layer2.0.conv2.weight")
    assert spec.group_of("layer2.0.downsample.0.weight") == stream2 == spec.group_of("layer2.1.conv2.weight")
    assert spec.group_of("layer2.0.downsample.1.running_mean") == stream2
    assert spec.group_of("layer1.0.conv1.weight") not in (stream1, stream2)  # inside a block: its own group
    assert spec.group_of("fc.weight", 1) == spec.group_of("layer4.1.conv2.weight") and spec.group_of("fc.bias") is None
    assert len(spec.groups) == 12  # 4 streams + 8 block interiors


def permute_resnet_stream_by_hand(model: nn.Module, seed: int) -> nn.Module:
    """Permute only the 64-channel residual stream of a torchvision resnet18, without the spec."""
    model = copy.deepcopy(model)
    p = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
    state = model.state_dict()
    outs = ["conv1.weight", "bn1"] + [f"layer1.{b}.{k}" for b in (0, 1) for k in ("conv2.weight", "bn2")]
    ins = ["layer1.0.conv1.weight", "layer1.1.conv1.weight", "layer2.0.conv1.weight", "layer2.0.downsample.0.weight"]
    for name in outs:
        keys = [name] if name.endswith("weight") else [f"{name}.{a}" for a in ("weight", "bias", "running_mean", "running_var")]
        for k in keys:
            state[k] = state[k][p]
    for k in ins:
        state[k] = state[k][:, p]
    model.load_state_dict(state)
    return model


def test_resnet18_stream_permutation_by_hand_keeps_the_function():
    model = randomize_norms(build_model("torchvision:resnet18", 3, 5), 0).eval()
    x = torch.randn(1, 3, 32, 32)
    assert max_output_diff(permute_resnet_stream_by_hand(model, 1), model, x) < 1e-5


def test_resnet18_random_permutation_keeps_the_function_and_weight_matching_undoes_it():
    torch.manual_seed(0)
    model = randomize_norms(build_model("torchvision:resnet18", 3, 5), 1).eval()
    spec = permutation_spec(model)
    perms = random_permutation(spec, seed=2)
    assert all(not torch.equal(p, torch.arange(len(p))) for p in perms.values())  # streams and block interiors
    permuted = apply_permutation(model, spec, perms)
    x = torch.randn(1, 3, 32, 32)
    assert max_param_diff(permuted, model) > 0.1
    assert max_output_diff(permuted, model, x) < 1e-5
    aligned = align_models(permuted, model, "weights").model
    assert max_param_diff(aligned, model) < 1e-6
    assert max_output_diff(aligned, model, x) < 1e-5


def test_smp_unet_full_model_spec_and_alignment_recover_a_permuted_copy():
    torch.manual_seed(0)
    model = randomize_norms(build_model("smp:Unet/resnet18", 3, 2), 1).eval()
    spec = permutation_spec(model)
    assert spec.group_of("decoder.blocks.0.conv1.0.weight", 1) is not None  # concat of decoder and skip features
    permuted = apply_permutation(model, spec, random_permutation(spec, seed=3))
    x = torch.randn(1, 3, 64, 64)
    assert max_output_diff(permuted, model, x) < 1e-4
    aligned = align_models(permuted, model, "weights").model
    assert max_param_diff(aligned, model) < 1e-6


class Zoo(nn.Module):
    """Depthwise and grouped convs, a channel concat, a squeeze-excite gate and a learned scale."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.SiLU())
        self.branch = nn.Conv2d(8, 6, 1)
        self.se = nn.Conv2d(8, 8, 1)
        self.mix = nn.Conv2d(14, 10, 1)
        self.grouped = nn.Conv2d(10, 10, 3, padding=1, groups=2)
        self.scale = nn.Parameter(torch.randn(1, 10, 1, 1))
        self.head = nn.Linear(10, 3)

    def forward(self, x):
        x = self.stem(x)
        d = self.dw(x)
        d = d * torch.sigmoid(self.se(d.mean((2, 3), keepdim=True)))
        x = torch.cat([d, self.branch(x)], dim=1)
        x = self.grouped(self.mix(x)) * self.scale
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_unknown_and_constrained_ops_are_handled_safely():
    torch.manual_seed(0)
    model = randomize_norms(Zoo(), 0).eval()
    spec = permutation_spec(model)
    assert spec.group_of("dw.0.weight") == spec.group_of("stem.0.weight")  # depthwise keeps its input's group
    stem = spec.group_of("stem.0.weight")
    assert stem is not None and spec.group_of("se.weight") == stem  # the gate multiplies the stem's channels
    mix_in = [(r.group, r.offset, r.size) for g in spec.groups for r in g.refs if (r.key, r.axis) == ("mix.weight", 1)]
    assert sorted(mix_in, key=lambda r: r[1]) == [(stem, 0, 8), (spec.group_of("branch.weight"), 8, 6)]  # concat
    # The grouped conv's input is cut into its two groups; its channels move within their group only.
    assert {g.name for g in spec.groups} >= {"mix[0:5]", "mix[5:10]", "grouped[0:5]", "grouped[5:10]"}
    grouped_in = {(r.group, r.within) for g in spec.groups for r in g.refs if (r.key, r.axis) == ("grouped.weight", 1)}
    assert grouped_in == {("mix[0:5]", (0, 0, 5)), ("mix[5:10]", (0, 5, 5))}
    assert spec.group_of("scale", 1) == spec.group_of("grouped.weight") == spec.group_of("head.weight", 1)
    x = torch.randn(2, 3, 12, 12)
    for seed in range(3):
        permuted = apply_permutation(model, spec, random_permutation(spec, seed))
        assert max_output_diff(permuted, model, x) < 1e-5


@settings(max_examples=8, deadline=None)
@given(width=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_any_random_permutation_of_the_builtin_cnn_keeps_its_function(width, seed):
    torch.manual_seed(seed)
    model = randomize_norms(build_model(f"builtin:cnn?width={width}", 2, 3), seed).eval()
    spec = permutation_spec(model)
    permuted = apply_permutation(model, spec, random_permutation(spec, seed))
    assert max_output_diff(permuted, model, torch.randn(2, 2, 8, 8)) < 1e-5
    assert max_param_diff(align_models(permuted, model).model, model) < 1e-6


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)


def test_untraceable_models_raise_one_clear_error():
    with pytest.raises(AlignmentError, match="cannot be traced by torch.fx.*align='none'"):
        align_models(Untraceable(), Untraceable(), "weights")


def test_activation_matching_needs_data_and_methods_are_checked():
    a, b = build_model("builtin:cnn?width=4", 1, 5), build_model("builtin:cnn?width=4", 1, 5)
    with pytest.raises(AlignmentError, match="needs data"):
        align_models(a, b, "activations")
    with pytest.raises(AlignmentError, match="unknown alignment"):
        align_models(a, b, "magic")


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["torchvision:resnet50", "timm:efficientnet_b0", "smp:PSPNet/resnet18"])
def test_bigger_models_round_trip(spec):
    torch.manual_seed(0)
    model = randomize_norms(build_model(spec, 3, 4), 1).eval()
    perm_spec = permutation_spec(model)
    permuted = apply_permutation(model, perm_spec, random_permutation(perm_spec, seed=1))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        scale = model(x).abs().max().item() + 1.0
    assert max_output_diff(permuted, model, x) < 1e-4 * scale
    assert max_param_diff(align_models(permuted, model).model, model) < 1e-6
