"""``paramreuse apply PLAN --source S --data ...``: the plan trained on the user's data, the model written."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.transfer.strategies import unit_names
from tests.conftest import TINY_ARCH
from tests.test_reuse import make_plan

runner = CliRunner()


def _files(tmp_path, trained_pair, decisions=None):
    s, _ = trained_pair
    save_checkpoint(tmp_path / "s.safetensors", s, ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    model = build_model(TINY_ARCH, 1, 5)
    names = unit_names(model)
    decisions = decisions or {n: ("reuse-frozen" if i == 0 else "reuse-finetuned") for i, n in enumerate(names)}
    (tmp_path / "plan.json").write_text(json.dumps(make_plan(model, decisions).to_dict()))
    return s, names


def _apply(tmp_path, *extra):
    args = ["apply", str(tmp_path / "plan.json"), "--source", str(tmp_path / "s.safetensors"), "--data", "fashion-mnist",
            "--classes", "5-7", "--shots", "4", "--device", "cpu", "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_apply_trains_by_the_plan_and_writes_a_model_that_loads(trained_pair, fake_fmnist, tmp_path):
    s, names = _files(tmp_path, trained_pair)
    result = _apply(tmp_path, "--format", "json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record == json.loads((tmp_path / "out" / "model.json").read_text()) | {"resumed": False}
    assert record["decision"] == "reuse" and record["decisions"][names[0]] == "reuse-frozen"
    model, info = load_checkpoint(tmp_path / "out" / "model.safetensors")
    assert info.num_classes == 3 and info.extra["test_metric"] == record["test_metric"] and 0 <= record["test_metric"] <= 1
    frozen = [k for k in s.state_dict() if k.startswith(("features.0.0.", "features.0.1."))]
    assert frozen and all(torch.equal(model.state_dict()[k], s.state_dict()[k]) for k in frozen)  # S's, untouched
    assert not torch.equal(model.state_dict()["features.1.0.weight"], s.state_dict()["features.1.0.weight"])
    stamp = (tmp_path / "out" / "model.safetensors").stat().st_mtime_ns
    again = _apply(tmp_path)  # the same inputs: loaded, not trained again
    assert again.exit_code == 0 and "model loaded from" in " ".join(again.stdout.split())
    assert (tmp_path / "out" / "model.safetensors").stat().st_mtime_ns == stamp
    init = ["train", "--arch", TINY_ARCH, "--classes", "5-9", "--shots", "2", "--epochs", "1", "--min-steps", "1", "--init",
            str(tmp_path / "out" / "model.safetensors"), "--device", "cpu", "--quiet", "--out", str(tmp_path / "T")]  # fmt: skip
    assert runner.invoke(app, init).exit_code == 0


def test_apply_with_a_plan_of_another_network_exits_2_with_one_line(trained_pair, fake_fmnist, tmp_path):
    _files(tmp_path, trained_pair)
    other = build_model("builtin:unet?width=4", 1, 2)
    (tmp_path / "plan.json").write_text(json.dumps(make_plan(other, {}).to_dict()))
    result = _apply(tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit the model: its units" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out" / "model.safetensors").exists()
