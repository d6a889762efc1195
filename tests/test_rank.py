"""``paramreuse rank`` through typer's CliRunner, on the tiny data set and tiny models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.data import load_task
from paramreuse.rank import OURS_LAYER, OURS_SOURCE
from paramreuse.runs import RunSpec, run_training
from paramreuse.scores import FEATURE_SCORES, SCORES
from paramreuse.train import TrainConfig
from tests.conftest import TINY_ARCH

runner = CliRunner()
TARGET = ["--target", "fashion-mnist", "--classes", "5-9", "--shots", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, fake_fmnist_dir):
    """Two tiny sources: one on classes 0-4, one on all ten (its head does not fit the target's)."""
    root = tmp_path_factory.mktemp("sources")
    paths = []
    for name, classes in (("five", "0-4"), ("ten", "0-9")):
        data = load_task("fashion-mnist", classes, data_dir=fake_fmnist_dir)
        run_training(RunSpec(TINY_ARCH, TrainConfig(epochs=3, batch_size=32, lr=1e-2)), data, root / name)
        paths.append(str(root / name / "model.safetensors"))
    return paths


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("rank")  # shared: T is fine-tuned once and then resumed


def invoke(args):
    return runner.invoke(app, ["rank", *TARGET, *args])


def test_rank_sources_with_every_score_and_ours(fake_fmnist, sources, out):
    result = invoke([*sources, "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "rank.json").read_text())
    assert printed["scored_on"] == 5 * 5 + 5 * 6  # the shots and the validation images, for every predictor
    rows = printed["rows"]
    assert {r["name"] for r in rows} == {"five", "ten"}
    for row in rows:
        assert set(row["values"]) == set(SCORES) | set(OURS_SOURCE)
        assert 0 <= row["values"]["j1_value"] <= 1 and row["values"]["rmse_position"] >= 0
        assert min(row["ranks"].values()) >= 1 and max(row["ranks"].values()) <= 2
    assert rows[0]["values"]["j1_value"] >= rows[1]["values"]["j1_value"]  # ranked by ours by default
    assert (out / "ten" / "plan.json").is_file() and (out / "ten" / "target" / "model.safetensors").is_file()


def test_rank_layers_agrees_with_the_replacement_sweep(fake_fmnist, sources, out):
    result = invoke([sources[0], "--layers", "--out", str(out / "layers"), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)["rows"]
    assert sorted(r["depth"] for r in rows) == list(range(1, 8))
    values = [r["values"]["cumulative_value"] for r in rows]
    assert values == sorted(values, reverse=True)
    sweep = json.loads((out / "layers" / "replacement.json").read_text())
    by_depth = {row["depth"]: row["value"] for row in sweep["cumulative"]}
    for row in rows:
        assert set(row["values"]) == set(FEATURE_SCORES) | set(OURS_LAYER)
        assert row["values"]["cumulative_value"] == pytest.approx(by_depth[row["depth"]])


def test_baselines_only_in_human_format(fake_fmnist, sources, tmp_path):
    result = invoke([*sources, "--no-ours", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Baselines" in result.stdout and "Ours" not in result.stdout and "logme" in result.stdout
    stored = json.loads((tmp_path / "rank.json").read_text())
    assert stored["by"] == "logme" and not (tmp_path / "five").exists()  # nothing fine-tuned
    logme = [r["values"]["logme"] for r in stored["rows"]]
    assert logme == sorted(logme, reverse=True)


def test_lower_is_better_columns_rank_ascending(fake_fmnist, sources, out):
    result = invoke([*sources, "--by", "rmse_position", "--out", str(out), "--format", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    positions = [r["values"]["rmse_position"] for r in printed["rows"]]
    assert positions == sorted(positions) and printed["higher_is_better"]["rmse_position"] is False


@pytest.mark.parametrize(
    "args,message",
    [
        (lambda s: [*s, "--layers"], "--layers ranks the layers of one source, got 2"),
        (lambda s: ["missing.safetensors"], "missing.safetensors does not exist"),
        (lambda s: [s[0], "--no-ours", "--by", "vibes"], "cannot rank by 'vibes'; choose one of logme"),
    ],
)
def test_bad_input_exits_2_with_one_line(fake_fmnist, sources, tmp_path, args, message):
    result = invoke([*args(sources), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
