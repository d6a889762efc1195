"""``paramreuse rank`` through typer's CliRunner, on the tiny data set and tiny models."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
from scipy import stats
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.data import load_task
from paramreuse.errors import ParamreuseError
from paramreuse.rank.ranking import OURS_LAYER, OURS_SOURCE, column_ranks, sort_rows
from paramreuse.rank.scores import FEATURE_SCORES, SCORES
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, run_training
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
        plan = json.loads((out / row["name"] / "plan.json").read_text())
        assert row["values"]["j1_value"] == pytest.approx(plan["network_value"])  # ours is J1 of that source's plan
        assert row["values"]["reusable_depth"] == plan["reusable_depth"]
    for column in rows[0]["ranks"]:  # ranks of two rows, by each column's direction (ties share rank 1)
        sign = 1 if printed["higher_is_better"][column] else -1
        a, b = (sign * r["values"][column] for r in rows)
        assert (rows[0]["ranks"][column], rows[1]["ranks"][column]) == (1 + (b > a), 1 + (a > b)), column
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


# ---- ranks and order, on rows made by hand --------------------------------------------------


@dataclass(frozen=True)
class Row:
    name: str
    scores: dict

    def values(self) -> dict:
        return self.scores


ROWS = [
    Row("a", {"logme": 0.5, "rmse_position": 0.1}),
    Row("b", {"logme": 0.5, "rmse_position": 0.3}),
    Row("c", {"logme": 0.2, "rmse_position": float("nan")}),
    Row("d", {"logme": 0.9}),
]


def test_column_ranks_share_the_better_rank_on_ties_and_skip_missing_values():
    ranks = column_ranks(ROWS)
    logme = stats.rankdata([-r.scores["logme"] for r in ROWS], method="min")  # higher is better
    assert [ranks[r.name]["logme"] for r in ROWS] == list(logme) == [2, 2, 4, 1]
    assert (ranks["a"]["rmse_position"], ranks["b"]["rmse_position"]) == (1, 2)  # lower is better
    assert "rmse_position" not in ranks["c"] and "rmse_position" not in ranks["d"]  # NaN, absent: no rank


def test_sort_rows_best_first_ties_in_input_order_and_missing_last():
    assert [r.name for r in sort_rows(ROWS, "logme")] == ["d", "a", "b", "c"]
    assert [r.name for r in sort_rows(ROWS[::-1], "logme")] == ["d", "b", "a", "c"]  # a tie keeps the given order
    by_rmse = [r.name for r in sort_rows(ROWS, "rmse_position")]
    assert by_rmse[:2] == ["a", "b"] and set(by_rmse[2:]) == {"c", "d"}
    with pytest.raises(ParamreuseError, match="cannot rank by 'nope'; choose one of logme, rmse_position"):
        sort_rows(ROWS, "nope")
