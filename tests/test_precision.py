"""Mixed precision is for CUDA only: on the CPU training and evaluation are exactly what they were."""

from __future__ import annotations

import pytest
import torch

from paramreuse.models import build_model
from paramreuse.training import precision
from paramreuse.training.loop import TrainConfig, evaluate, predict, train
from tests.conftest import TINY_ARCH, synthetic_set

CONFIG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, optimizer="sgd")


def test_bf16_and_channels_last_are_chosen_for_cuda_alone(monkeypatch):
    assert not precision.enabled("cpu") and not precision.enabled(torch.device("cpu"))
    assert precision.enabled("cuda") and precision.enabled(torch.device("cuda", 0))
    monkeypatch.setenv(precision.SWITCH, "off")
    assert not precision.enabled("cuda")
    x = torch.randn(2, 3, 4, 4)
    assert precision.prepare_input(x, "cpu") is x
    assert isinstance(precision.autocast("cpu"), type(precision.autocast(torch.device("cpu"))))


def test_the_cpu_path_trains_and_predicts_as_plain_fp32(monkeypatch):
    data = synthetic_set(24, seed=2)
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    reference = build_model(TINY_ARCH, 1, 5)
    reference.load_state_dict(model.state_dict())
    seen = []
    monkeypatch.setattr(precision, "autocast", lambda device: seen.append(torch.device(device).type) or torch.autocast("cpu", enabled=False))
    train(model, data, CONFIG, seed=1)
    assert set(seen) == {"cpu"} and all(p.is_contiguous() for p in model.parameters())  # no channels-last
    # the same steps written out by hand, in fp32 and the default memory format
    torch.manual_seed(1)
    opt = torch.optim.SGD(reference.parameters(), lr=1e-2, momentum=0.9, weight_decay=CONFIG.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 6)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        reference.train()
        for idx in torch.randperm(24, generator=g).split(8):
            loss = torch.nn.functional.cross_entropy(reference(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    torch.testing.assert_close(model.state_dict(), reference.state_dict(), atol=0, rtol=0)
    out = predict(model, data)
    assert out.dtype == torch.float32 and torch.equal(out, reference.eval()(data.x))


@pytest.mark.gpu
def test_bf16_on_cuda_stays_close_to_fp32(monkeypatch):
    data = synthetic_set(200, seed=3)
    values = {}
    for switch in ("off", "on"):
        monkeypatch.setenv(precision.SWITCH, switch)
        torch.manual_seed(0)
        model = build_model(TINY_ARCH, 1, 5)
        train(model, data, TrainConfig(epochs=5, batch_size=32, lr=1e-2), seed=0, device="cuda")
        values[switch] = evaluate(model, data, device="cuda")
    assert abs(values["on"] - values["off"]) < 0.05
