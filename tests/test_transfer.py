import json

import pytest
import torch

from paramreuse.data import load_task
from paramreuse.errors import CheckpointError
from paramreuse.models import build_model
from paramreuse.train import TrainConfig, train
from paramreuse.transfer import L2SP, strategy, transplant, unit_names
from paramreuse.transfer_runs import Source, TransferConfig, prepare, run_transfer
from tests.conftest import TINY_ARCH, synthetic_set

TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6)


def head_input(model, x):
    captured = {}
    handle = model.head.register_forward_pre_hook(lambda _m, args: captured.setdefault("x", args[0].clone()))
    with torch.no_grad():
        model.eval()(x)
    handle.remove()
    return captured["x"]


def test_all_reuse_transplant_reproduces_the_source_features(trained_pair):
    s, _ = trained_pair
    target = build_model(TINY_ARCH, 1, 3)  # another task: 3 classes, fresh head
    report = transplant(s.state_dict(), target, dict.fromkeys(unit_names(target), "reuse-finetuned"))
    x = synthetic_set(20, seed=7).x
    assert torch.equal(head_input(target, x), head_input(s, x))
    assert "features.0.1.running_mean" in report.copied
    assert {k for k, _ in report.skipped} == {"head.weight", "head.bias"}


def test_reinit_units_stay_fresh_and_are_listed(trained_pair):
    s, _ = trained_pair
    torch.manual_seed(3)
    target = build_model(TINY_ARCH, 1, 5)
    fresh = target.features[0][0].weight.clone()
    decisions = dict.fromkeys(unit_names(target), "reuse-finetuned") | {"features.0.0": "reinit"}
    report = transplant(s.state_dict(), target, decisions)
    assert torch.equal(target.features[0][0].weight, fresh)
    assert ("features.0.0.weight", "features.0.0: reinit") in report.skipped
    assert torch.equal(target.features[1][0].weight, s.features[1][0].weight)


def test_shape_mismatch_is_a_clear_error():
    wide = build_model("builtin:cnn?width=8", 1, 5)
    target = build_model(TINY_ARCH, 1, 5)
    with pytest.raises(CheckpointError, match=r"features\.0\.0\.weight \(8, 1, 3, 3\) in S vs \(4, 1, 3, 3\)"):
        transplant(wide.state_dict(), target, dict.fromkeys(unit_names(target), "reuse-frozen"))


def test_frozen_units_do_not_change_during_training(trained_pair, fake_fmnist):
    from paramreuse.data import load_task

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0)
    names = unit_names(s)
    plan = {n: ("reuse-frozen" if i < 3 else "reuse-finetuned") for i, n in enumerate(names)}
    config = TransferConfig(training=TINY_TRAIN)
    prepared = prepare(Source(TINY_ARCH, s.state_dict()), task, "plan", plan, seed=0, config=config)
    train(prepared.model, task.train, prepared.training)
    after, source = prepared.model.state_dict(), s.state_dict()
    frozen = [k for k in after if k.split(".")[:2] in (["features", "0"], ["features", "1"], ["features", "3"])]
    assert "features.1.1.running_var" in frozen
    assert all(torch.equal(after[k], source[k]) for k in frozen)
    assert not torch.equal(after["features.4.0.weight"], source["features.4.0.weight"])


def test_strategy_scales():
    model = build_model(TINY_ARCH, 1, 5)
    assert strategy("linear-probe", model).lr_scale == (("", 0.0), ("head", 1.0))
    depth2 = strategy("best-depth", model, depth=2)
    assert dict(depth2.lr_scale)["features.1.0"] == 0.0 and dict(depth2.lr_scale)["features.3.0"] == 1.0
    assert strategy("scratch", model).decisions == {}
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy("magic", model)


def test_l2sp_penalty_matches_its_formula():
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    anchor = {k: v.detach() + 0.5 for k, v in model.named_parameters() if not k.startswith("head")}
    value = L2SP(anchor, alpha=0.2, beta=0.4)(model)
    n_anchor = sum(v.numel() for v in anchor.values())
    head_sq = model.head.weight.pow(2).sum() + model.head.bias.pow(2).sum()
    assert value.item() == pytest.approx(0.1 * 0.25 * n_anchor + 0.2 * head_sq.item(), rel=1e-5)


def test_transfer_grid_writes_the_contract_and_resumes(trained_pair, fake_fmnist, tmp_path, monkeypatch):
    import paramreuse.transfer_runs as runs

    s, _ = trained_pair
    plan = dict.fromkeys(unit_names(s), "reuse-finetuned") | {"features.7.0": "reinit"}
    config = TransferConfig(shots=(2, 4), seeds=2, training=TINY_TRAIN, test_per_class=10)
    source = Source(TINY_ARCH, s.state_dict())

    def stop_after(n):
        def progress(event):
            if event.completed == n:
                raise KeyboardInterrupt
        return progress

    with pytest.raises(KeyboardInterrupt):
        run_transfer(source, plan, "fashion-mnist", "5-9", tmp_path, config, progress=stop_after(7))
    assert len((tmp_path / "transfer.runs.jsonl").read_text().splitlines()) == 1 + 7
    loads = []
    monkeypatch.setattr(runs, "load_task", lambda *a, **k: loads.append(a) or load_task(*a, **k))
    events = []
    doc = run_transfer(source, plan, "fashion-mnist", "5-9", tmp_path, config, progress=events.append, headline=4)
    assert len(events) == 24 and len(loads) == 24 - 7  # finished runs are not recomputed
    assert json.loads((tmp_path / "transfer.json").read_text()) == json.loads(json.dumps(doc))
    assert doc["headline_shots"] == 4 and doc["shots"] == [2, 4] and doc["seeds"] == 2
    assert set(doc["strategies"]) == {"scratch", "finetune-all", "linear-probe", "plan", "best-depth", "l2-sp"}
    for entry in doc["strategies"].values():
        assert len(entry["runs"]) == 2 and entry["ci"][0] <= entry["mean"] <= entry["ci"][1]
        assert entry["by_shots"]["4"]["mean"] == entry["mean"]
    assert set(doc["significance"]) == {"plan_vs_scratch", "plan_vs_finetune-all"}
    assert all(d in range(8) for d in doc["strategies"]["best-depth"]["depths"])
    assert not (tmp_path / "transfer.runs.jsonl").exists()
