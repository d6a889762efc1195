import json
from itertools import pairwise

import pytest
import torch

from paramreuse.backends import RunContext
from paramreuse.data import load_task
from paramreuse.errors import CheckpointError
from paramreuse.models import build_model
from paramreuse.models.units import inventory
from paramreuse.training.loop import TrainConfig, train
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import run_transfer
from paramreuse.transfer.runs import prepare
from paramreuse.transfer.strategies import L2SP, STRATEGIES, strategy, transplant, unit_names, unit_prefixes
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
    prepared = prepare(Source(TINY_ARCH, s.state_dict()), task, "plan", plan=plan, seed=0, config=config)
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
    from paramreuse.transfer import runs

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
        run_transfer(source, plan, "fashion-mnist", "5-9", RunContext(tmp_path, progress=stop_after(7)), config=config)
    assert len((tmp_path / "transfer.runs.jsonl").read_text().splitlines()) == 1 + 7
    loads = []
    monkeypatch.setattr(runs, "load_task", lambda *a, **k: loads.append(a) or load_task(*a, **k))
    events = []
    doc = run_transfer(source, plan, "fashion-mnist", "5-9", RunContext(tmp_path, progress=events.append), config=config,
                       headline=4)
    total = 2 * 2 * len(STRATEGIES)
    assert len(events) == total and len(loads) == total - 7  # finished runs are not recomputed
    assert json.loads((tmp_path / "transfer.json").read_text()) == json.loads(json.dumps(doc))
    assert doc["headline_shots"] == 4 and doc["shots"] == [2, 4] and doc["seeds"] == 2
    assert set(doc["strategies"]) == set(STRATEGIES) >= {"lp-ft", "auto-rgn"}
    for entry in doc["strategies"].values():
        assert len(entry["runs"]) == 2 and entry["mean"] == pytest.approx(sum(entry["runs"]) / 2)
        assert entry["by_shots"]["4"]["mean"] == entry["mean"]
    assert doc["strategies"]["best-depth"]["oracle"] and not doc["strategies"]["plan"]["oracle"]
    assert set(doc["significance"]) == {f"plan_vs_{o}" for o in ("scratch", "finetune-all", "lp-ft", "l2-sp", "auto-rgn")}
    plan_runs = doc["strategies"]["plan"]["runs"]
    assert doc["significance"]["plan_vs_scratch"]["mean_diff"] == pytest.approx(
        sum(plan_runs) / 2 - doc["strategies"]["scratch"]["mean"])
    assert not (tmp_path / "transfer.runs.jsonl").exists()


def test_plan_rates_are_what_the_plan_says(trained_pair, fake_fmnist):
    """Frozen units get no optimiser group, fine-tuned units train at finetuned_scale x lr, the head at 1x."""
    from paramreuse.training.loop import param_groups

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0)
    names = unit_names(s)
    plan = {n: ("reuse-frozen" if i < 2 else "reuse-finetuned") for i, n in enumerate(names)}
    config = TransferConfig(training=TINY_TRAIN, finetuned_scale=0.5)
    prepared = prepare(Source(TINY_ARCH, s.state_dict()), task, "plan", plan=plan, seed=0, config=config)
    groups, frozen = param_groups(prepared.model, prepared.training)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    owner = {prefix: u.name for u in inventory(prepared.model) for prefix in unit_prefixes(u)}
    for name, p in prepared.model.named_parameters():
        unit = next((owner[q] for q in owner if name.startswith(q + ".")), None)
        expected = {"reuse-frozen": None, "reuse-finetuned": 0.5 * TINY_TRAIN.lr, None: TINY_TRAIN.lr}[plan.get(unit)]
        assert (name in frozen) == (expected is None), name
        assert lr_of.get(id(p)) == (pytest.approx(expected) if expected is not None else None), name


def test_lp_ft_trains_the_head_alone_first(trained_pair, fake_fmnist, monkeypatch):
    from paramreuse.transfer import runs

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0)
    scales = []
    real_train = runs.train
    monkeypatch.setattr(runs, "train", lambda model, data, config, *a, **k: scales.append(config.lr_scale) or real_train(model, data, config, *a, **k))
    config = TransferConfig(training=TINY_TRAIN)
    runs.run_one(Source(TINY_ARCH, s.state_dict()), task, "lp-ft", plan=None, seed=0, config=config, device="cpu")
    assert scales == [(("", 0.0), ("head", 1.0)), ()]  # linear probe, then everything
    scales.clear()
    runs.run_one(Source(TINY_ARCH, s.state_dict()), task, "finetune-all", plan=None, seed=0, config=config, device="cpu")
    assert scales == [()]


def test_best_depth_keeps_the_candidate_with_the_best_validation_score(trained_pair, fake_fmnist, monkeypatch):
    """With the shots budget: candidates judged on held-out shots, the best (shallowest on ties) retrained on all."""
    from paramreuse.transfer import runs

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=5, seed=0, val_per_class=0)
    scripted = {0: 0.4, 1: 0.7, 2: 0.9, 3: 0.9, 4: 0.1}  # depth -> validation score
    trained_on, evaluated = [], []

    def fake_train(model, data, config, *a, **k):
        trained_on.append(len(data))
        return real_train(model, data, config, *a, **k)

    def fake_evaluate(model, data, kind, device, frozen=False):
        if data is task.test:
            evaluated.append(model)
            return 0.5
        depth = sum(not model.get_submodule(n).weight.requires_grad for n in unit_names(model))  # frozen units
        return scripted.get(depth, 0.0)

    real_train = runs.train
    monkeypatch.setattr(runs, "train", fake_train)
    monkeypatch.setattr(runs, "evaluate", fake_evaluate)
    result = runs._best_depth(Source(TINY_ARCH, s.state_dict()), task, None, 0, TransferConfig(training=TINY_TRAIN), "cpu")
    assert [c["val"] for c in result["candidates"]][:5] == [0.4, 0.7, 0.9, 0.9, 0.1]
    assert result["depth"] == 2 and result["val"] == 0.9  # the best; the shallower of a tie
    assert trained_on[-1] == len(task.train) and set(trained_on[:-1]) == {len(task.train) - 5}  # 1 of 5 per class held out
    assert len(evaluated) == 1  # only the chosen model meets the test set


def test_candidate_depths_are_evenly_spaced_and_keep_both_ends():
    from paramreuse.transfer.runs import candidate_depths

    assert candidate_depths(7) == list(range(8))
    deep = candidate_depths(20, 6)
    assert deep[0] == 0 and deep[-1] == 20 and len(deep) == 6 and deep == sorted(deep)
    assert max(b - a for a, b in pairwise(deep)) - min(b - a for a, b in pairwise(deep)) <= 1


def test_auto_rgn_rates_follow_relative_gradient_norms():
    """Each tensor's rate is lr x |grad|/|theta| / max over tensors, on the epoch's first batches."""
    from paramreuse.tasks import CLASSIFICATION
    from paramreuse.training.loop import _auto_rgn_rates, param_groups, relative_gradient_norms

    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    data = synthetic_set(32, seed=3)
    config = TrainConfig(lr=0.1, auto_rgn=True, schedule="constant")
    groups, _ = param_groups(model, config)
    params = [g["params"][0] for g in groups]
    assert len(groups) == len(list(model.parameters()))  # one group per tensor
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    norms = relative_gradient_norms(model.train(), [(data.x[:16], data.y[:16])], CLASSIFICATION, params)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in buffers.items())  # the probe leaves BN statistics alone
    model.zero_grad()
    CLASSIFICATION.loss(model(data.x[:16]), data.y[:16]).backward()
    expected = [p.grad.norm().item() / p.detach().norm().item() if p.detach().norm() > 0 else float("inf") for p in params]
    assert norms == pytest.approx(expected, rel=1e-4)
    assert float("inf") in expected  # the builtin CNN's BN biases start at zero
    opt = torch.optim.SGD(groups, lr=config.lr)
    _auto_rgn_rates(opt, norms, 0.0, "constant")
    top = max(e for e in expected if e != float("inf"))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * min(e / top, 1.0) for e in expected], rel=1e-4)
    assert min(g["lr"] for g in opt.param_groups) < 0.1 * 0.5  # rates really differ between tensors


def test_a_head_made_of_several_modules_is_the_head_not_a_unit():
    """smp's segmentation head is a Sequential; its conv is the head (fresh), never a unit to freeze or copy."""
    torch.manual_seed(0)
    source = build_model("smp:PSPNet/resnet18", 1, 6)
    target = build_model("smp:PSPNet/resnet18", 1, 3)  # other classes: the head conv differs in shape
    names = unit_names(target)
    assert "segmentation_head.0" not in names and "decoder.conv.0" in names
    report = transplant(source.state_dict(), target, dict.fromkeys(names, "reuse-frozen"))
    assert ("segmentation_head.0.weight", "task head: fresh for the target's classes") in report.skipped
    assert "decoder.conv.0.weight" in report.copied
