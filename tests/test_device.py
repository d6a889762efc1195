"""CUDA path: run with `pytest -m gpu` on a machine with a GPU (deselected by default)."""

import copy

import pytest
import torch

from paramreuse.devices import resolve_device
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.models import build_model
from paramreuse.training.loop import TrainConfig, evaluate, train
from tests.conftest import TINY_ARCH, synthetic_set


@pytest.mark.gpu
def test_training_and_sweeps_run_on_cuda():
    device = resolve_device("auto")
    assert device.type == "cuda", "this test needs a CUDA device"
    data = synthetic_set(200, seed=1)
    torch.manual_seed(0)
    target = build_model(TINY_ARCH, 1, 5)
    train(target, data, TrainConfig(epochs=5, batch_size=32, lr=1e-2), device=device)
    assert next(target.parameters()).device.type == "cuda"
    assert evaluate(target, data, device=device) > 0.5
    source = build_model(TINY_ARCH, 1, 5).eval()
    target_cpu = copy.deepcopy(target).cpu()
    config = SweepConfig(params=("unit",), adaptive=False)
    on_gpu = replacement_sweep(copy.deepcopy(source), target, data, data, config, device=device)
    on_cpu = replacement_sweep(copy.deepcopy(source), target_cpu, data, data, config, device="cpu")
    assert on_gpu.baseline == pytest.approx(on_cpu.baseline, abs=0.01)
    assert [r.value for r in on_gpu.rows] == pytest.approx([r.value for r in on_cpu.rows], abs=0.02)
