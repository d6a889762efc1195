"""The plan in one's own code (paramreuse.transfer.reuse): load_plan, apply_plan, param_groups."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import paramreuse as pr
from paramreuse.errors import PlanError
from paramreuse.judge.plan import Plan
from paramreuse.judge.verdicts import LayerVerdict, Thresholds
from paramreuse.models.units import inventory


class Net(nn.Module):
    """Three conv-BN units (a PReLU after the first, outside every unit) and a linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3):
        super().__init__()
        self.conv1, self.bn1, self.act = nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.PReLU(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.head(x.mean(dim=(2, 3)))


def make_plan(model: nn.Module, decisions: dict[str, str], finetuned_rate: float = 1.0) -> Plan:
    """A plan for ``model``'s units (the head re-initialised), as `paramreuse plan` would write it."""
    decisions = {u.name: "reinit" for u in inventory(model)} | decisions
    rates = {"reuse-frozen": 0.0, "reuse-finetuned": finetuned_rate, "reinit": 1.0}
    layers = tuple(LayerVerdict(name, "conv", 0.0, (0.0, 0.0), 0.1, True, True, True, d, "test", "reusable", rates[d])
                   for name, d in decisions.items())  # fmt: skip
    return Plan(network_reusable=True, network_value=0.9, network_drop=0.0, network_variant="bn kept", baseline=0.9,
                metric="accuracy", reusable_depth=1, lineage="finetuned",
                thresholds=Thresholds(finetuned_rate=finetuned_rate), layers=layers)  # fmt: skip


@pytest.fixture
def source() -> dict[str, torch.Tensor]:
    """S's tensors: every parameter and BN statistic moved away from the initialisation."""
    torch.manual_seed(1)
    s = Net(num_classes=5)
    with torch.no_grad():
        for t in s.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t) + 0.5)
    return {k: v.clone() for k, v in s.state_dict().items()}


PLAN = {"conv1": "reuse-frozen", "conv2": "reuse-finetuned", "conv3": "reinit"}


def test_apply_plan_copies_freezes_and_reinitialises(source):
    torch.manual_seed(2)
    model = Net()
    applied = pr.apply_plan(model, make_plan(model, PLAN, finetuned_rate=0.5), source)
    state = model.state_dict()
    for key in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.running_mean", "bn1.running_var", "conv2.weight",
                "bn2.running_var"):  # fmt: skip
        assert torch.equal(state[key], source[key]), key
    assert torch.equal(model.act.weight, source["act.weight"])  # outside the units: S's, as the plan reuses S
    for key in ("conv3.weight", "bn3.weight", "bn3.running_mean", "head.bias"):
        assert not torch.equal(state[key], source[key]), key
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias"} == set(applied.frozen)
    assert applied.reinitialised == ("conv3", "head") and applied.held_norms == ("bn1",)
    assert "act.weight" in applied.transplant.copied


def test_a_scratch_plan_copies_nothing_not_even_outside_the_units(source):
    torch.manual_seed(2)
    model = Net()
    applied = pr.apply_plan(model, make_plan(model, {"conv1": "reinit", "conv2": "reinit", "conv3": "reinit"}), source)
    assert applied.transplant.copied == () and applied.frozen == ()
    assert not torch.equal(model.act.weight, source["act.weight"])


def test_param_groups_carry_the_plans_rates_and_a_loop_keeps_frozen_units_and_their_statistics(source):
    torch.manual_seed(2)
    model = Net()
    plan = make_plan(model, PLAN, finetuned_rate=0.5)
    pr.apply_plan(model, plan, source)
    groups = pr.param_groups(model, plan, lr=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    rate = {names[id(p)]: g["lr"] for g in groups for p in g["params"]}
    assert rate == {"conv2.weight": 0.05, "conv2.bias": 0.05, "bn2.weight": 0.05, "bn2.bias": 0.05,
                    "act.weight": 0.1, "conv3.weight": 0.1, "conv3.bias": 0.1, "bn3.weight": 0.1, "bn3.bias": 0.1,
                    "head.weight": 0.1, "head.bias": 0.1}  # fmt: skip
    optimiser = torch.optim.SGD(groups, momentum=0.9)
    model.train()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    state = model.state_dict()
    for key in ("conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.running_var"):  # frozen, statistics too
        assert torch.equal(state[key], source[key]), key
    assert not torch.equal(state["conv2.weight"], source["conv2.weight"])
    assert not torch.equal(state["bn2.running_mean"], source["bn2.running_mean"])


def test_load_plan_reads_plan_json_and_says_what_is_wrong(tmp_path, source):
    model = Net()
    plan = make_plan(model, PLAN, finetuned_rate=0.5)
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    loaded = pr.load_plan(tmp_path / "plan.json")
    assert loaded.decisions() == plan.decisions() and loaded.thresholds.finetuned_rate == 0.5
    with pytest.raises(PlanError, match=r"nowhere\.json does not exist"):
        pr.load_plan(tmp_path / "nowhere.json")
    (tmp_path / "other.json").write_text(json.dumps({"metric": "accuracy"}))
    with pytest.raises(PlanError, match=r"other\.json is not a plan .*use the plan\.json that `paramreuse plan`"):
        pr.load_plan(tmp_path / "other.json")


def test_a_plan_for_another_architecture_is_refused_by_name(source):
    other = make_plan(Net(), {"features.0.0": "reuse-frozen"})
    with pytest.raises(PlanError, match=r"its units features\.0\.0 are not in it \(the model's units are conv1"):
        pr.apply_plan(Net(), other, source)
    with pytest.raises(PlanError, match="does not fit the model"):
        pr.param_groups(Net(), other)
