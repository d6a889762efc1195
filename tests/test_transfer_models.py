"""The models the user came for: transfer keeps them (first seed, headline shots), and they load."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from paramreuse.backends import RunContext
from paramreuse.cli import app
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.training.loop import TrainConfig
from paramreuse.transfer import grid, runs
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import run_transfer
from paramreuse.transfer.strategies import unit_names
from tests.conftest import TINY_ARCH
from tests.test_reuse import make_plan

runner = CliRunner()
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6)
STRATEGIES = ("scratch", "finetune-all", "plan")
REAL_JOB = grid.transfer_job


def _decisions(model) -> dict[str, str]:
    return {n: ("reuse-frozen" if i == 0 else "reuse-finetuned") for i, n in enumerate(unit_names(model))}


def test_transfer_keeps_the_models_and_trains_again_only_a_missing_one(trained_pair, fake_fmnist, tmp_path, monkeypatch):
    s, _ = trained_pair
    source, plan = Source(TINY_ARCH, s.state_dict()), _decisions(s)
    config = TransferConfig(strategies=STRATEGIES, shots=(2, 4), seeds=2, training=TINY_TRAIN)
    args = (source, plan, "fashion-mnist", "5-9", RunContext(tmp_path))
    doc = run_transfer(*args, config=config, headline=4, keep=STRATEGIES)
    assert doc["model_files"] == {name: f"models/{name}.safetensors" for name in STRATEGIES}
    for name in STRATEGIES:
        _, info = load_checkpoint(tmp_path / doc["model_files"][name])
        assert info.extra["strategy"] == name and (info.extra["shots"], info.extra["seed"]) == (4, 0)
        assert info.extra["test_metric"] == doc["strategies"][name]["runs"][0]  # seed 0 at the headline shots
        assert info.num_classes == 5 and info.classes == (5, 6, 7, 8, 9)
    planned, _ = load_checkpoint(tmp_path / "models" / "plan.safetensors")
    first = unit_names(s)[0]
    for key, value in s.state_dict().items():  # the frozen unit (and its BN statistics) is S's
        if key.startswith((first + ".", "features.0.1.")):
            assert torch.equal(planned.state_dict()[key], value), key
    # A kept model gone: only its run is trained again, for the model alone; nothing else is rewritten.
    (tmp_path / "models" / "scratch.safetensors").unlink()
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.*")}
    jobs = []
    monkeypatch.setattr(grid, "transfer_job", lambda job: jobs.append(job) or REAL_JOB(job))
    again = run_transfer(*args, config=config, headline=4, keep=STRATEGIES)
    assert [(j.strategy, j.seed, j.data.options["shots"]) for j in jobs] == [("scratch", 0, 4)]
    assert (tmp_path / "models" / "scratch.safetensors").is_file()
    assert again == json.loads((tmp_path / "transfer.json").read_text()) and again["strategies"] == doc["strategies"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # keep only the plan's from now on: the document says so, and nothing is trained
    jobs.clear()
    assert run_transfer(*args, config=config, headline=4)["model_files"] == {"plan": "models/plan.safetensors"}
    assert jobs == [] and json.loads((tmp_path / "transfer.json").read_text())["model_files"] == {"plan": "models/plan.safetensors"}


@pytest.fixture
def s_file(trained_pair, tmp_path):
    s, _ = trained_pair
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, s, ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    plan = make_plan(build_model(TINY_ARCH, 1, 5), _decisions(s))
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    return path


def test_transfer_save_all_writes_one_model_per_strategy_that_train_init_loads(s_file, fake_fmnist, tmp_path):
    out = tmp_path / "t"
    args = ["transfer", str(s_file), "--plan", str(tmp_path / "plan.json"), "--data", "fashion-mnist", "--classes",
            "5-9", "--shots", "3", "--seeds", "1", "--strategies", "scratch,plan", "--save", "all", "--device", "cpu",
            "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "models").iterdir()) == ["plan.safetensors", "scratch.safetensors"]
    text = " ".join(result.stdout.split())
    assert "model (plan, seed 0, 3 shots, test accuracy" in text and str(out / "models" / "plan.safetensors") in text
    init = ["train", "--arch", TINY_ARCH, "--classes", "0-2", "--shots", "2", "--epochs", "1", "--min-steps", "1",
            "--init", str(out / "models" / "plan.safetensors"), "--device", "cpu", "--quiet", "--out", str(tmp_path / "T")]  # fmt: skip
    trained = runner.invoke(app, init)
    assert trained.exit_code == 0, trained.output
    bad = runner.invoke(app, [*args[:-2], "--save", "some", "--out", str(tmp_path / "u")])
    assert bad.exit_code == 2 and "--save takes plan, all, none, got 'some'" in bad.stderr


def test_a_given_plan_trains_as_it_says_its_rate_and_its_head_warm_up(s_file, fake_fmnist, tmp_path, monkeypatch):
    """`transfer --plan` takes the plan's finetuned_rate (unless --finetuned-scale) and warm head, as `apply` does."""
    doc = json.loads((tmp_path / "plan.json").read_text())
    doc["thresholds"] |= {"finetuned_rate": 0.5, "warm_head": True}
    (tmp_path / "plan.json").write_text(json.dumps(doc))
    warmed = []
    real = runs.run_one
    monkeypatch.setattr(runs, "run_one", lambda *a, **k: warmed.append((k["config"].finetuned_scale, k["warm_head"])) or real(*a, **k))
    base = ["transfer", str(s_file), "--plan", str(tmp_path / "plan.json"), "--data", "fashion-mnist", "--classes",
            "5-9", "--shots", "3", "--seeds", "1", "--strategies", "plan", "--save", "none", "--device", "cpu", "--quiet"]  # fmt: skip
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "a")]).exit_code == 0
    assert runner.invoke(app, [*base, "--finetuned-scale", "0.2", "--out", str(tmp_path / "b")]).exit_code == 0
    assert warmed == [(0.5, True), (0.2, True)]
    assert json.loads((tmp_path / "a" / "transfer.json").read_text())["config"]["finetuned_scale"] == 0.5
    (tmp_path / "layers.json").write_text(json.dumps({"layers": doc["layers"]}))  # hand-written: the default settings
    assert runner.invoke(app, [*base[:3], str(tmp_path / "layers.json"), *base[4:], "--out", str(tmp_path / "c")]).exit_code == 0
    assert warmed[-1] == (1.0, True)
