import json

import pytest
import torch

from paramreuse.data import load_task
from paramreuse.errors import CheckpointError
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, init_from_checkpoint, run_training
from tests.conftest import TINY_ARCH

CONFIG = TrainConfig(epochs=1, batch_size=16)


def test_run_writes_checkpoint_and_record(fake_fmnist, tmp_path):
    task = load_task("fashion-mnist", "0-4", shots=5, seed=0)
    model, record = run_training(RunSpec(TINY_ARCH, CONFIG), task, tmp_path)
    stored = json.loads((tmp_path / "train.json").read_text())
    assert stored["data"]["classes"] == [0, 1, 2, 3, 4] and stored["data"]["train"] == 25
    assert stored["environment"]["torch"] == torch.__version__
    loaded, info = load_checkpoint(tmp_path / "model.safetensors")
    with torch.no_grad():  # the recorded test accuracy is the saved model's, counted here by hand
        correct = (loaded.eval()(task.test.x).argmax(1) == task.test.y).double().mean().item()
    assert stored["test_metric"] == record["test_metric"] == pytest.approx(correct, abs=1e-12)
    assert info.classes == (0, 1, 2, 3, 4) and info.arch == TINY_ARCH
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_finished_run_is_resumed_not_retrained(fake_fmnist, tmp_path):
    task = load_task("fashion-mnist", "0-4", shots=5, seed=0)
    _, first = run_training(RunSpec(TINY_ARCH, CONFIG), task, tmp_path)
    mtime = (tmp_path / "model.safetensors").stat().st_mtime_ns
    _, second = run_training(RunSpec(TINY_ARCH, CONFIG), task, tmp_path)
    assert second["resumed"] and not first["resumed"]
    assert (tmp_path / "model.safetensors").stat().st_mtime_ns == mtime
    _, third = run_training(RunSpec(TINY_ARCH, CONFIG, seed=1), task, tmp_path)  # another config: retrain
    assert not third["resumed"]


def test_init_copies_everything_but_the_head(tmp_path):
    torch.manual_seed(0)
    source = build_model(TINY_ARCH, 1, 5)
    save_checkpoint(tmp_path / "s.safetensors", source, ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    torch.manual_seed(1)
    target = build_model(TINY_ARCH, 1, 3)
    fresh_head = target.head.weight.clone()
    init_from_checkpoint(target, tmp_path / "s.safetensors")
    assert torch.equal(target.features[0][0].weight, source.features[0][0].weight)
    assert torch.equal(target.fc[0].weight, source.fc[0].weight)
    assert torch.equal(target.head.weight, fresh_head)


def test_init_shape_mismatch_is_clear(tmp_path):
    source = build_model("builtin:cnn?width=8", 1, 5)
    save_checkpoint(tmp_path / "s.safetensors", source, ModelInfo(arch="builtin:cnn?width=8", in_channels=1, num_classes=5))
    with pytest.raises(CheckpointError, match=r"--init .* does not fit the architecture: shape mismatch features\.0\.0\.weight"):
        init_from_checkpoint(build_model(TINY_ARCH, 1, 5), tmp_path / "s.safetensors")
