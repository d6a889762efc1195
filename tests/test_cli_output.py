"""What the human format prints: the plan's J2 verdicts and rates, and a folder's image rule."""

from __future__ import annotations

import json

from rich.console import Console

from paramreuse.cli.plan import print_plan
from tests.test_folders import class_folder, cli


def _plan(layers: list[dict]) -> dict:
    thresholds = {"network_tolerance": 0.02, "layer_tolerance": 0.02, "rmse_position": 0.5}
    return {"thresholds": thresholds, "network_reusable": True, "metric": "accuracy", "network_value": 0.9,
            "network_drop": 0.01, "network_variant": "bn kept", "baseline": 0.91, "lineage": "fine-tuned",
            "reusable_depth": 1, "layers": layers}  # fmt: skip


def _unit(name: str, **fields) -> dict:
    return {"name": name, "drop": 0.01, "null_position": 0.2, "reusable_by_replacement": False,
            "reusable_by_rmse": True, "decision": "reuse-finetuned"} | fields  # fmt: skip


def _rows(plan: dict) -> dict[str, list[str]]:
    """The printed plan table, unit name -> its cells."""
    console = Console(width=200, record=True)
    print_plan(console, plan)
    lines = console.export_text().replace("┃", "│").splitlines()  # the header row is drawn heavy
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if "│" in line]
    return {row[0]: row for row in cells}


def test_plan_prints_j2_from_the_file_and_the_rate():
    layers = [_unit("a", j2="reusable", rate=0.0, decision="reuse-frozen"), _unit("b", j2="undecided", rate=1.0),
              _unit("c", j2="not reusable", rate=0.5), _unit("head", j2=None, rate=1.0, decision="reinit")]  # fmt: skip
    rows = _rows(_plan(layers))
    assert rows["unit"][3:] == ["J2", "J3", "decision", "rate"]
    assert [rows[n][3] for n in "abc"] == ["reusable", "undecided", "not reusable"]  # not reusable_by_replacement
    assert rows["head"][3] == "–" and rows["head"][5:] == ["reinit", "1x"]
    assert [rows[n][6] for n in "abc"] == ["0x", "1x", "0.5x"]


def test_plan_files_without_j2_or_rate_fall_back_to_reusable_by_replacement():
    rows = _rows(_plan([_unit("a", reusable_by_replacement=True), _unit("b")]))
    assert rows["unit"][3:] == ["J2", "J3", "decision"]  # no rate column
    assert (rows["a"][3], rows["b"][3]) == ("reusable", "not reusable")


def test_train_prints_the_image_rule_of_folder_data(tmp_path):
    root = class_folder(tmp_path / "pets")
    result = cli("--data", f"folder:{root}", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    rule = json.loads((tmp_path / "out" / "train.json").read_text())["data"]["images"]
    assert f"images: {rule}" in " ".join(result.stdout.split())  # rich may wrap the line


def test_train_prints_no_image_rule_for_array_data(fake_fmnist, tmp_path):
    result = cli("--data", "fashion-mnist", "--classes", "0-1", "--shots", "2", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "images:" not in result.stdout
