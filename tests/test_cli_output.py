"""What the human format prints: the plan's J2 verdicts and rates, and a folder's image rule."""

from __future__ import annotations

import io
import json

import pytest
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


VERBS = ["study", "train", "compare", "replace", "plan", "transfer", "apply", "report", "rank"]


@pytest.mark.parametrize("verb", [None, *VERBS])
def test_help_reads_at_80_columns(verb):
    """Issue 21: no option text or example cut with '…', and flags without a `<bool>` type."""
    from typer.testing import CliRunner

    from paramreuse.cli import app

    args = [verb, "--help"] if verb else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    assert "…" not in result.output
    assert "<bool>" not in result.output


def test_compare_table_prints_long_unit_names_and_values_in_full_in_a_pipe():
    """Issue 21: at 80 columns and not a terminal, names and values fold onto more lines instead of '…'."""
    from paramreuse.cli.common import layer_table

    def unit(name):
        return {"name": name, "kind": "conv", "shape": [8, 16, 1, 1], "aligned": True, "rmse_raw": 1234567.891234,
                "rmse": 0.0412, "rmse_normalized": 0.5, "rmse_null": 0.25, "null_position": 0.125}  # fmt: skip

    names = ["conv1", "features.1.block.1.fc1", "features.1.block.1.fc2", "layer1.0.conv1"]
    comparison = {"lineage": "independent", "alignment": {"method": "weights"}, "layers": [unit(n) for n in names]}
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    console.print(layer_table(comparison))
    text = console.file.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    # each cell's pieces, line after line, joined: the name column is the first between box characters
    first_cells = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    for name in names:
        assert name in first_cells
    values = "".join(line.split("│")[5].strip() for line in text.splitlines() if line.startswith("│"))
    assert values.count("1234567.8912") == len(names)


def test_the_first_box_reads_at_80_columns_in_a_pipe():
    """Issue 28: the box closes the output, one labelled line each, wrapped at spaces within 80 columns (continued
    two spaces in), a path longer than a line kept whole, no '…', no colour codes in a pipe."""
    from paramreuse.cli.common import print_answer
    from paramreuse.report import Answer

    long_path = "/very/long/folder/of/runs/" + "x" * 70 + "/model.safetensors"
    box = Answer(decision="Reuse S: freeze features.0.0, features.1.0; fine-tune features.3.0–fc.0; fresh head.",
                 evidence="S-initialised minus fresh +0.040 (95% CI -0.030 to +0.110, 50 images); right on 26/30 "
                          "benchmark draws.",
                 gain="+0.020 over scratch (CI -0.010 to +0.050, 5 seeds).",
                 model=f"{long_path}; load: paramreuse.load_checkpoint(path).",
                 elsewhere="scratch 0.857 vs plan 0.855 (p=0.62): try scratch.")  # fmt: skip
    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    print_answer(console, box)
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("The answer ") and len(lines[0]) <= 80
    assert all(len(line) <= 80 or long_path in line for line in lines) and "…" not in console.file.getvalue()
    assert "\x1b[" not in console.file.getvalue()
    assert any(line.strip() == long_path + ";" for line in lines)  # whole, on a line of its own
    starts = [line.split(":")[0] for line in lines[1:] if not line.startswith("  ")]
    assert starts == ["Decision", "Evidence", "Expected gain", "Model", "But"]
    assert " ".join(" ".join(lines[1:]).split()) == " ".join(box.text().split())  # every word, in order
