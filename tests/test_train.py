import pytest
import torch

from paramreuse.data import load_task
from paramreuse.devices import resolve_device
from paramreuse.errors import ParamreuseError
from paramreuse.models import build_model
from paramreuse.training.loop import TrainConfig, evaluate, param_groups, train
from tests.conftest import TINY_ARCH


@pytest.fixture
def task(fake_fmnist):
    return load_task("fashion-mnist", "0-4", shots=10, seed=0)


def test_training_lowers_the_loss_and_learns(task):
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    before = evaluate(model, task.val)
    result = train(model, task.train, TrainConfig(epochs=1, batch_size=10, lr=1e-2, min_steps=60), val=task.val)
    assert result.steps == 60 and result.epochs == 12
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.val_metric > before + 0.3


def test_same_seed_same_weights(task):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(TINY_ARCH, 1, 5)
        train(model, task.train, TrainConfig(epochs=2, batch_size=8), seed=3)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_frozen_units_do_not_change(task):
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-2, lr_scale=(("features.0", 0.0), ("head", 2.0)))
    train(model, task.train, config)
    after = model.state_dict()
    frozen = [k for k in before if k.startswith("features.0.")]
    assert "features.0.1.running_mean" in frozen  # batch-norm statistics are held too
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["features.1.0.weight"], after["features.1.0.weight"])


def test_param_groups_use_the_longest_prefix():
    model = build_model(TINY_ARCH, 1, 5)
    groups, frozen = param_groups(model, TrainConfig(lr=0.1, lr_scale=(("", 0.5), ("head", 1.0), ("features.0", 0.0))))
    lrs = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lrs[id(model.head.weight)] == pytest.approx(0.1)
    assert lrs[id(model.fc[0].weight)] == pytest.approx(0.05)
    assert "features.0.0.weight" in frozen and id(model.features[0][0].weight) not in lrs


def test_everything_frozen_is_an_error(task):
    with pytest.raises(ValueError, match="nothing to train"):
        train(build_model(TINY_ARCH, 1, 5), task.train, TrainConfig(lr_scale=(("", 0.0),)))


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParamreuseError, match="unknown device"):
        resolve_device("tpu")
