"""Frozen units computed once: the same models and test metrics as running them at every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from paramreuse.data import load_task
from paramreuse.models import build_model
from paramreuse.training import frozen
from paramreuse.training.frozen import FrozenSplit, NoSplit, split_frozen
from paramreuse.training.loop import TrainConfig, frozen_norms, param_groups, train
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.runs import run_one
from paramreuse.transfer.strategies import strategy

TINY = TransferConfig(training=TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6))
CASES = {  # arch, data, input size: (strategy, depth) runs and the last module each prefix covers
    "builtin:cnn?width=4": ("fashion-mnist", None, {("linear-probe", None): "fc.0", ("best-depth", 3): "features.3.1"}),
    "torchvision:resnet18": ("fashion-mnist", 16, {("linear-probe", None): "layer4.1.bn2",
                                                   ("best-depth", 4): "layer1.0.bn2"}),  # the skip of layer1.1 crosses
    "builtin:unet": ("fashion-mnist-seg", None, {("linear-probe", None): "up.1.1.1",
                                                 ("best-depth", 3): "down.0.1.1"}),  # the UNet skip crosses
}  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_store(monkeypatch):
    monkeypatch.delenv(frozen.SWITCH, raising=False)
    frozen.clear()
    yield
    frozen.clear()


def run(monkeypatch, switch: str, source: Source, data, name: str, depth: int | None) -> dict:
    monkeypatch.setenv(frozen.SWITCH, switch)
    frozen.clear()
    return run_one(source, data, name, plan=None, seed=3, config=TINY, device="cpu", depth=depth, warm_head=name == "lp-ft")


def prepared_split(model: nn.Module, name: str, depth: int | None):
    """The split the training loop makes for ``model`` trained as ``name`` says (its norms held as the loop holds them)."""
    _, held = param_groups(model, TrainConfig(lr_scale=strategy(name, model, depth=depth).lr_scale))
    model.train()
    for norm in frozen_norms(model, held):
        norm.eval()
    return split_frozen(model, frozen_norms(model, held))


@pytest.mark.parametrize("arch", list(CASES))
def test_a_cached_frozen_prefix_trains_and_tests_as_the_whole_model_does(arch, fake_seg_dir, monkeypatch):
    data_name, size, runs = CASES[arch]
    data = load_task(data_name, "0-4", shots=3, seed=0, data_dir=str(fake_seg_dir), size=size, test_per_class=6)
    torch.manual_seed(0)
    source = Source(arch, build_model(arch, data.channels, data.num_outputs).state_dict())
    for (name, depth), last in runs.items():
        monkeypatch.setenv(frozen.SWITCH, "on")
        split = prepared_split(build_model(arch, data.channels, data.num_outputs), name, depth)
        assert isinstance(split, FrozenSplit) and split.modules[-1] == last
        cached = run(monkeypatch, "on", source, data, name, depth)
        assert len(frozen._STORE) == 2 + bool(len(data.val))  # shots, validation and test images: each once
        whole = run(monkeypatch, "off", source, data, name, depth)
        assert not frozen._STORE
        assert cached["value"] == pytest.approx(whole["value"], abs=1e-4)
        for key, value in whole["model"].state_dict().items():
            torch.testing.assert_close(cached["model"].state_dict()[key], value, atol=1e-5, rtol=1e-4)


def test_lp_ft_probe_stage_uses_the_cache_and_ends_with_the_same_model(fake_fmnist_dir, monkeypatch):
    data = load_task("fashion-mnist", "5-9", shots=3, seed=0, data_dir=str(fake_fmnist_dir), test_per_class=4)
    torch.manual_seed(1)
    source = Source("builtin:cnn?width=4", build_model("builtin:cnn?width=4", 1, 5).state_dict())
    cached = run(monkeypatch, "on", source, data, "lp-ft", None)
    assert len(frozen._STORE) == 1  # the probe stage's shots; the second stage trains everything
    whole = run(monkeypatch, "off", source, data, "lp-ft", None)
    assert cached["value"] == pytest.approx(whole["value"], abs=1e-4)
    torch.testing.assert_close(cached["model"].state_dict(), whole["model"].state_dict(), atol=1e-5, rtol=1e-4)


class InputSkip(nn.Module):
    """A frozen body whose output is concatenated with the input again: no cut leaves one value to cache."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(dropout), nn.ReLU())
        self.head = nn.Conv2d(5, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.body(x), x], dim=1))


def frozen_body(model: nn.Module) -> list[nn.Module]:
    for p in model.body.parameters():
        p.requires_grad_(False)
    model.train()
    model.body[1].eval()
    return [model.body[1]]


def test_the_whole_model_runs_where_no_cut_holds_the_only_value_read(monkeypatch):
    torch.manual_seed(0)
    model = InputSkip()
    split = split_frozen(model, frozen_body(model))
    assert isinstance(split, NoSplit) and "only value" in split.reason
    with_dropout = InputSkip(dropout=0.5)  # a random module ends the prefix before it
    with_dropout.forward = lambda x: with_dropout.head(with_dropout.body(x).repeat(1, 2, 1, 1)[:, :5])
    assert isinstance(split_frozen(with_dropout, frozen_body(with_dropout)), NoSplit)
    unheld = InputSkip()
    for p in unheld.body.parameters():
        p.requires_grad_(False)
    assert isinstance(split_frozen(unheld.train(), []), NoSplit)  # a BN in train mode updates its statistics
    monkeypatch.setenv(frozen.SWITCH, "off")
    cnn = build_model("builtin:cnn?width=4", 1, 5)
    assert split_frozen(cnn.eval()).reason == f"{frozen.SWITCH} is off"


def test_the_fallback_trains_exactly_as_before(monkeypatch):
    images = torch.randn(12, 1, 8, 8)
    from paramreuse.data import ImageSet
    from paramreuse.tasks import SEGMENTATION

    data = ImageSet(images, torch.zeros(12, dtype=torch.long), ("a",), mask=(images[:, 0] > 0).long(), mask_names=("bg", "fg"))
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-2, optimizer="sgd", lr_scale=(("body", 0.0),))
    states = []
    for switch in ("on", "off"):
        monkeypatch.setenv(frozen.SWITCH, switch)
        torch.manual_seed(0)
        model = InputSkip()
        train(model, data, config, seed=0, task=SEGMENTATION)
        states.append(model.state_dict())
    assert not frozen._STORE
    torch.testing.assert_close(states[0], states[1], atol=0, rtol=0)


def test_the_store_is_bounded(monkeypatch):
    model = build_model("builtin:cnn?width=4", 1, 5).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    split = split_frozen(model)
    one = split.features(torch.randn(8, 1, 28, 28), "cpu")
    monkeypatch.setattr(frozen, "CACHE_BYTES", 2 * one.numel() * one.element_size())
    images = [torch.randn(8, 1, 28, 28) for _ in range(3)]
    first = split.features(images[0], "cpu")
    assert split.features(images[0], "cpu") is first  # stored: not computed again
    for x in images[1:]:
        split.features(x, "cpu")
    assert len(frozen._STORE) == 2 and split.features(images[0], "cpu") is not first  # the oldest was dropped


class InPlace(nn.Module):
    """A frozen body ending in an in-place op whose result nobody reads (fx keeps reading the tensor it wrote)."""

    def __init__(self):
        super().__init__()
        self.body, self.head = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        y = self.body(x)
        y.mul_(2.0)
        return self.head(y)


def test_an_in_place_op_at_the_end_of_the_prefix_is_kept():
    model = InPlace().eval()
    model.body.requires_grad_(False)
    split = split_frozen(model)
    x = torch.randn(4, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(split.rest(split.prefix(x)), model(x), atol=0, rtol=0)
