"""Alignment contract over a registry of architectures (timm style).

For every architecture: a randomly permuted copy computes the same function, weight matching
brings every unit the spec covers back to RMSE < 1e-5, and every other unit is reported as
``aligned: false`` with the expected reason. The table in docs/alignment.md is printed from
this registry by bench/align_coverage.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paramreuse.align import rules as channel_rules
from paramreuse.align.specs import MISREAD, apply_permutation, permutation_spec, random_permutation
from paramreuse.judge.kernels import compare_models
from paramreuse.models import build_model
from tests.test_align import max_output_diff, randomize_norms


class PublishedCNN(nn.Module):
    """A CNN as published (e.g. ported from Keras): conv-BN-PReLU stages, a channel-last flatten, PReLU head."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4):
        super().__init__()
        widths, c = (16, 32, 32), in_channels
        self.stages = nn.ModuleList()
        for w in widths:
            self.stages.append(nn.Sequential(nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.PReLU(w), nn.MaxPool2d(2)))
            c = w
        self.fc1 = nn.Linear(c * 4 * 4, 64)
        self.act = nn.PReLU(64)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x):
        for stage in self.stages:
            x = stage(x)
        x = x.permute(0, 2, 3, 1).flatten(1)  # channel-last, as TensorFlow orders the dense layer's inputs
        return self.fc2(self.drop(self.act(self.fc1(x))))


class OpsZoo(nn.Module):
    """Grouped and transposed convolutions, GroupNorm, a channel-last LayerNorm + Linear block, a shared PReLU,
    squeeze-and-excitation, a UNet-style skip concatenation and a learned per-channel scale."""

    def __init__(self, in_channels: int = 3, num_classes: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.act = nn.PReLU()  # one slope for all channels
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4)
        self.ln = nn.LayerNorm(32)
        self.mlp = nn.Linear(32, 32)
        self.se_reduce, self.se_expand = nn.Conv2d(32, 8, 1), nn.Conv2d(8, 32, 1)
        self.up = nn.ConvTranspose2d(32, 16, 2, stride=2, groups=2)
        self.up_bn = nn.BatchNorm2d(16)
        self.fuse = nn.Conv2d(32, 16, 3, padding=1, groups=2)
        self.scale = nn.Parameter(torch.rand(16) + 0.5)
        self.head = nn.Conv2d(16, num_classes, 1)

    def forward(self, x):
        skip = self.act(self.gn(self.stem(x)))
        y = self.down(skip).permute(0, 2, 3, 1)
        y = self.mlp(self.ln(y)).permute(0, 3, 1, 2)
        y = y * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = F.relu(self.up_bn(self.up(y)))
        return self.head(self.fuse(torch.cat([skip, y], 1)) * self.scale.view(1, -1, 1, 1))


@dataclass(frozen=True)
class Arch:
    """An architecture of the contract: how to build it, its input size, and the units it leaves unaligned."""

    build: Callable[[], nn.Module]
    size: int = 32
    uncovered: int = 0
    reason: str = ""  # a regular expression every uncovered unit's reason matches
    slow: bool = False


def _spec(spec: str) -> Callable[[], nn.Module]:
    return lambda: build_model(spec, 3, 4)


ARCHS: dict[str, Arch] = {
    "published-cnn (PReLU, channel-last flatten)": Arch(PublishedCNN),
    "ops-zoo (grouped/transposed conv, GN, LN)": Arch(OpsZoo),
    "torchvision:resnet18": Arch(_spec("torchvision:resnet18")),
    "torchvision:mobilenet_v3_small": Arch(_spec("torchvision:mobilenet_v3_small")),
    "torchvision:squeezenet1_0": Arch(_spec("torchvision:squeezenet1_0")),
    "timm:efficientnet_b0": Arch(_spec("timm:efficientnet_b0")),
    "torchvision:shufflenet_v2_x0_5": Arch(
        _spec("torchvision:shufflenet_v2_x0_5"), uncovered=37, reason="splits the channel axis|chunk"
    ),
    "smp:Unet/resnet18": Arch(_spec("smp:Unet/resnet18"), size=64),
    "smp:PSPNet/resnet18": Arch(_spec("smp:PSPNet/resnet18"), size=64, uncovered=10, reason="not used by the forward"),
    "smp:DeepLabV3/resnet18": Arch(_spec("smp:DeepLabV3/resnet18"), size=64),
    "torchvision:resnet50": Arch(_spec("torchvision:resnet50"), slow=True),
    "torchvision:vgg11_bn": Arch(_spec("torchvision:vgg11_bn"), slow=True),
    "torchvision:densenet121": Arch(_spec("torchvision:densenet121"), slow=True),
    "torchvision:convnext_tiny": Arch(_spec("torchvision:convnext_tiny"), slow=True),
    "torchvision:regnet_x_400mf": Arch(_spec("torchvision:regnet_x_400mf"), slow=True),
    "smp:FPN/resnet18": Arch(_spec("smp:FPN/resnet18"), size=64, slow=True),
}


def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    """The architecture with random weights and distinct norm values (eval mode), and an input batch."""
    arch = ARCHS[name]
    torch.manual_seed(0)
    model = randomize_norms(arch.build(), 1).eval()
    return model, torch.randn(1, 3, arch.size, arch.size, generator=torch.Generator().manual_seed(2))


def permuted_comparison(name: str):
    """(model, permuted copy, input, comparison of the copy with the model after weight matching)."""
    model, x = build(name)
    spec = permutation_spec(model, x)
    permuted = apply_permutation(model, spec, random_permutation(spec, seed=1))
    return model, permuted, x, compare_models(permuted, model, align="weights", data=x, draws=1)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if a.slow else n for n, a in ARCHS.items()])
def test_permuted_copy_keeps_the_function_and_aligns_back(name):
    arch = ARCHS[name]
    model, permuted, x, comparison = permuted_comparison(name)
    with torch.no_grad():
        scale = model(x).abs().max().item() + 1.0
    assert max_output_diff(permuted, model, x) < 1e-4 * scale
    assert max(layer.rmse_raw for layer in comparison.layers) > 1e-3  # the copy was really permuted
    covered = [layer for layer in comparison.layers if layer.aligned]
    assert all(g.rmse < 1e-5 for layer in covered for g in layer.groups), [l.name for l in covered if l.rmse >= 1e-5]
    uncovered = [layer for layer in comparison.layers if not layer.aligned]
    assert len(uncovered) == arch.uncovered, [(l.name, l.reason) for l in uncovered][:5]
    assert all(layer.reason and re.search(arch.reason, layer.reason) for layer in uncovered)
    summary = comparison.alignment
    assert summary["method"] == "weights" and summary["groups"] > 0
    assert (summary["units_aligned"], summary["units_not_aligned"]) == (len(covered), len(uncovered))
    assert max_output_diff(comparison.aligned_source, permuted, x) < 1e-4 * scale


def test_published_cnn_binds_prelu_slopes_and_the_channel_last_dense_inputs():
    model, x = build("published-cnn (PReLU, channel-last flatten)")
    spec = permutation_spec(model, x)
    last = spec.group_of("stages.2.0.weight")
    assert last is not None and spec.group_of("stages.2.2.weight") == last  # per-channel PReLU slopes
    (ref,) = [r for g in spec.groups for r in g.refs if (r.key, r.axis) == ("fc1.weight", 1)]
    assert (ref.group, ref.size, ref.inner, ref.outer, ref.period) == (last, 32, 1, 16, 32)  # c at hw * 32 + c
    assert spec.group_of("act.weight") == spec.group_of("fc1.weight")


def test_comparison_json_says_per_unit_whether_it_was_aligned():
    *_, comparison = permuted_comparison("torchvision:shufflenet_v2_x0_5")
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    assert {"units_aligned", "units_not_aligned", "note"} <= data["alignment"].keys()
    assert "could not be fully aligned" in data["alignment"]["note"]
    for layer in data["layers"]:
        assert list(layer)[:4] == ["name", "kind", "shape", "aligned"]
        assert ("reason" in layer) == (not layer["aligned"])


class Flipped(nn.Module):
    """Every hidden layer's channels are reversed, which no rule models: nothing can be permuted."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 4)

    def forward(self, x):
        x = torch.flip(F.relu(self.conv1(x)), [1])
        x = torch.flip(F.relu(self.conv2(x)), [1])
        return self.fc(x.mean((2, 3)))


def test_a_pair_with_nothing_to_permute_is_never_reported_as_aligned():
    torch.manual_seed(0)
    a, b = Flipped(), Flipped()
    comparison = compare_models(a, b, align="weights")
    assert comparison.alignment["method"] == "none" and comparison.alignment["units_aligned"] == 0
    assert "found no channels it can permute" in comparison.alignment["note"]
    assert all(not layer.aligned and layer.rmse == layer.rmse_raw for layer in comparison.layers)
    assert all("flip" in layer.reason for layer in comparison.layers)


def test_a_finetuned_pair_is_reported_unaligned_with_the_reason():
    torch.manual_seed(0)
    model = PublishedCNN()
    comparison = compare_models(model, model)
    assert comparison.alignment["method"] == "none" and comparison.alignment["units_not_aligned"] == 3 + 2
    assert all(not layer.aligned and "fine-tuned pair" in layer.reason for layer in comparison.layers)


def test_a_misread_operation_is_caught_and_its_channels_left_in_place(monkeypatch):
    """Pretend the rules took a channel flip for a pointwise op: the check on the model drops those groups."""
    monkeypatch.setattr(channel_rules, "_POINTWISE_FUNCS", channel_rules._POINTWISE_FUNCS | {torch.flip})
    torch.manual_seed(0)
    model = Flipped().eval()
    spec = permutation_spec(model, torch.randn(2, 3, 12, 12))
    assert not spec.groups
    assert any(note.reason == MISREAD for note in spec.notes_of("conv1.weight", 0))
