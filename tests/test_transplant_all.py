"""All of S: tensors outside every unit (PReLU slopes, a learned scale) follow the strategy's reuse of S."""

import pytest
import torch

from paramreuse.data import load_task
from paramreuse.models import build_model
from paramreuse.models.units import inventory
from paramreuse.training.loop import TrainConfig, param_groups
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.runs import prepare
from paramreuse.transfer.strategies import strategy, transplant, unit_names, unit_prefixes

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.PReLU(num_parameters=4)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))  # a learned scale outside any unit
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.act(self.bn(self.conv(x))) * self.scale
        return self.head(x.mean(dim=(2, 3)))


def build(in_channels=1, num_classes=10):
    return Net(in_channels, num_classes)
"""

OUTSIDE = ("act.weight", "scale")
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6)


@pytest.fixture
def user_source(tmp_path):
    """S: the user's network, every tensor randomly perturbed away from its initialisation."""
    (tmp_path / "net.py").write_text(NET)
    arch = f"py:{tmp_path / 'net.py'}:build"
    torch.manual_seed(11)
    s = build_model(arch, 1, 5)
    with torch.no_grad():
        for p in s.parameters():
            p.add_(torch.randn_like(p))
    return Source(arch, {k: v.clone() for k, v in s.state_dict().items()})


def _prepared(source, task, name, plan=None):
    config = TransferConfig(training=TINY_TRAIN)
    return prepare(source, task, name, plan=plan, seed=0, config=config)


@pytest.mark.parametrize(("name", "plan"), [("finetune-all", None), ("plan", {"conv": "reuse-frozen"})])
def test_strategies_that_start_from_s_hold_its_tensors_outside_units(user_source, fake_fmnist, name, plan):
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0)
    prepared = _prepared(user_source, task, name, plan)
    state = prepared.model.state_dict()
    for key in OUTSIDE + ("conv.weight", "bn.running_var"):
        assert torch.equal(state[key], user_source.state[key]), key
    assert not torch.equal(state["head.weight"], user_source.state["head.weight"])
    # The report lists them as copied.
    fresh = build_model(user_source.arch, 1, 5)
    report = transplant(user_source.state, fresh, strategy(name, fresh, plan).decisions)
    assert set(OUTSIDE) <= set(report.copied)
    assert {k for k, _ in report.skipped} == {"head.weight", "head.bias"}
    # Tensors outside units train at the normal rate, even beside a frozen unit.
    groups, frozen = param_groups(prepared.model, prepared.training)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    params = dict(prepared.model.named_parameters())
    assert all(lr_of[id(params[k])] == pytest.approx(TINY_TRAIN.lr) for k in OUTSIDE)
    assert ("conv.weight" in frozen) == (name == "plan")


@pytest.mark.parametrize(("name", "plan"), [("scratch", None), ("plan", {"conv": "reinit"})])
def test_strategies_that_reuse_no_unit_leave_them_fresh(user_source, fake_fmnist, name, plan):
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0)
    state = _prepared(user_source, task, name, plan).model.state_dict()
    for key in OUTSIDE:
        assert not torch.equal(state[key], user_source.state[key]), key
    fresh = build_model(user_source.arch, 1, 5)
    report = transplant(user_source.state, fresh, strategy(name, fresh, plan).decisions)
    assert report.copied == ()
    assert ("scale", "outside the units; no unit of S is reused") in report.skipped


def test_a_tensor_outside_units_that_s_lacks_or_shapes_otherwise_stays_fresh_and_is_listed(user_source):
    torch.manual_seed(5)
    target = build_model(user_source.arch, 1, 5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    state = {k: v for k, v in user_source.state.items() if k != "scale"} | {"act.weight": torch.ones(1)}
    report = transplant(state, target, dict.fromkeys(unit_names(target), "reuse-finetuned"))
    assert ("scale", "outside the units; missing in S") in report.skipped
    assert ("act.weight", "outside the units; (1,) in S vs (4,) in the target") in report.skipped
    assert torch.equal(target.scale, before["scale"]) and torch.equal(target.act.weight, before["act.weight"])
    assert torch.equal(target.conv.weight, user_source.state["conv.weight"])


BENCHMARK_ARCHS = [
    ("builtin:cnn?width=4", 1),
    ("builtin:unet", 1),
    ("torchvision:resnet18", 3),
    ("smp:PSPNet/resnet18", 1),
    ("smp:Unet/resnet18", 1),
]


@pytest.mark.parametrize(("arch", "channels"), BENCHMARK_ARCHS)
def test_benchmark_architectures_have_no_tensors_outside_units(arch, channels):
    """So the rule for such tensors changes no copied set, and no benchmark number."""
    model = build_model(arch, channels, 3)
    prefixes = tuple(p + "." for u in inventory(model) for p in unit_prefixes(u))
    assert [k for k in model.state_dict() if not k.startswith(prefixes)] == []
