"""What the human format prints: the plan's J2 verdicts and rates, and a folder's image rule."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path

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
    # every name whole, or broken after a separator (issue 29); every value whole
    printed = _pieces(text)
    for name in names:
        assert all(printed[p] >= 1 for p in _pieces(name)), name
    assert text.count("1234567.8912") == len(names)


# ---- tables at 80 columns: cells break at spaces or separators, never inside a word (issue 29) ----------------

LONG_UNITS = ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer3.1.bn2", "features.1.block.1.fc1",
              "encoder.layer4.1.downsample.1", "fc"]  # fmt: skip
BOXES = re.compile(r"[\s│┃┏┓┗┛━─┡┩╇┳┻┼╋┴┬└┘┌┐├┤╭╮╰╯]+")


def _pieces(text: str) -> Counter:
    """Every word of ``text`` cut after its separators (a number whole), counted."""
    from paramreuse.cli.tables import pieces

    return Counter(p for line in text.splitlines() for word in BOXES.split(line) if word for p in pieces(word))


def _render(print_it, width: int) -> str:
    """What ``print_it`` prints to a console of ``width`` columns that is not a terminal (a pipe)."""
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    print_it(console)
    return console.file.getvalue()


def assert_no_word_split(print_it) -> str:
    """At 80 columns every piece of the wide rendering (a word, or a part of a unit name up to a separator)
    is printed whole as often as at 400 columns: nothing was cut inside a word; no line is wider than 80."""
    wide, narrow = _render(print_it, 400), _render(print_it, 80)
    assert max(len(line) for line in narrow.splitlines()) <= 80, narrow
    assert "…" not in narrow
    counted = _pieces(narrow)
    split = {p: n for p, n in _pieces(wide).items() if counted[p] < n}
    assert not split, (split, narrow)
    return narrow


def _units_plan() -> dict:
    layers = [_unit(n, j2="not reusable", rate=0.5) for n in LONG_UNITS]
    return _plan(layers) | {"lineage": "finetuned", "reusable_depth": 3}


def _transfer_doc() -> dict:
    strategies = ["scratch", "finetune-all", "linear-probe", "lp-ft", "l2-sp", "auto-rgn", "plan", "best-depth"]
    entry = {"mean": 0.7123, "ci": [0.6912, 0.7334]}
    by_shots = {str(n): entry for n in (5, 10, 20, 50)}
    return {"shots": [5, 10, 20, 50], "seeds": 5, "metric": "accuracy", "data": "folder:/home/someone/photos/"
            "holidays-2024/five-classes-sixty-four-pixels", "class_ids": [0, 1, 2, 3, 4],
            "class_names": ["cat", "dog", "owl", "fox", "hedgehog"],
            "strategies": {s: entry | {"by_shots": by_shots, "oracle": s == "best-depth"} for s in strategies},
            "significance": {}}  # fmt: skip


def _sweep_doc() -> dict:
    row = {"value": 0.7012, "drop": 0.0123, "ci": [-0.012, 0.034], "n": 250}
    rows = [{"layer": n, "params": p} | row for n in LONG_UNITS for p in ("conv.weight", "bn.stats", "unit")]
    return {"metric": "accuracy", "baseline": 0.7135, "rows": rows, "cumulative": [],
            "network": {"conv_kernels_bn_recalibrated": row}, "timing": {"mode": "cached", "adaptive": True, "seconds": 3.2}}  # fmt: skip


def _comparison_doc() -> dict:
    unit = {"kind": "conv", "shape": [128, 64, 3, 3], "aligned": True, "rmse_raw": 0.0123456, "rmse": 0.0412,
            "rmse_normalized": 0.5, "rmse_null": 0.25, "null_position": 0.125}  # fmt: skip
    return {"lineage": "independent", "alignment": {"method": "activations"}, "layers": [unit | {"name": n} for n in LONG_UNITS]}


def _rank_table(console) -> None:
    """The two tables of `rank --layers`: the baselines' scores and ours, cells as rank formats them."""
    from paramreuse.cli.rank import SHORT
    from paramreuse.cli.tables import table
    from paramreuse.rank.ranking import OURS_LAYER
    from paramreuse.rank.scores import SCORES

    for title, group in (("Baselines", list(SCORES)), ("Ours (S vs T = S fine-tuned on the shots)", list(OURS_LAYER))):
        rows = [[n, 3] + ["0.123"] * len(group) for n in LONG_UNITS]
        console.print(table(title, ["layer", "k"] + [SHORT.get(c, c) for c in group], rows))


def _study_tables(console) -> None:
    from paramreuse.cli.tables import table
    from paramreuse.report.html import MODEL_LABELS

    rows = [[label, "target test", 0.7123] for label in MODEL_LABELS.values()]
    console.print(table("Models", ["model", "evaluated on", "test accuracy"], rows))
    layer_rows = [[n, 0.0123, 0.0456, 0.0789, 0.1234] for n in LONG_UNITS]
    console.print(table("Raw kernel RMSE to S per unit (lineage target: finetuned, full: finetuned, scratch: independent)",
                        ["unit", "S vs target", "S vs full", "S vs scratch", "null"], layer_rows))  # fmt: skip


def _train_table(console) -> None:
    from paramreuse.cli.tables import table

    rows = [["val accuracy", 0.7123], ["test accuracy", 0.7012], ["epochs", 38], ["steps", 152], ["seconds", 12.3]]
    console.print(table("torchvision:resnet18?weights=DEFAULT on folder:/home/someone/photos/holidays-2024/"
                        "five-classes-sixty-four-pixels classes cat, dog, owl", ["", "value"], rows))  # fmt: skip


@pytest.mark.parametrize("verb, print_it", [
    ("plan", lambda console: print_plan(console, _units_plan())),
    ("compare", lambda console: console.print(__import__("paramreuse.cli.common", fromlist=["layer_table"]).layer_table(_comparison_doc()))),
    ("replace", lambda console: __import__("paramreuse.cli.replace", fromlist=["print_sweep"]).print_sweep(console, _sweep_doc(), Path("runs/r"))),
    ("transfer", lambda console: __import__("paramreuse.cli.transfer", fromlist=["print_transfer"]).print_transfer(console, _transfer_doc())),
    ("rank", _rank_table),
    ("study", _study_tables),
    ("train", _train_table),
])  # fmt: skip
def test_no_table_cell_is_split_inside_a_word_at_80_columns(verb, print_it):
    assert_no_word_split(print_it)


def test_a_table_too_wide_breaks_unit_names_after_a_separator():
    from paramreuse.cli.tables import table

    console = Console(file=io.StringIO(), width=80, force_terminal=False)
    rows = [["layer2.0.downsample.0", 0.0123, 0.5, "not reusable", "yes", "reuse-finetuned", "0.5x"]]
    console.print(table("t", ["unit", "drop", "rmse/null", "J2", "J3", "decision", "rate"], rows * 3, width=58))
    text = console.file.getvalue()
    assert _pieces(text)["downsample."] == 3 and _pieces(text)["finetuned"] == 3, text
    assert max(len(line) for line in text.splitlines()) <= 58


# ---- progress in a log: plain lines at a modest rate; an ETA during long runs (issue 29) -----------------------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_redirected_progress_prints_plain_lines_with_stage_count_elapsed_and_eta():
    from paramreuse.cli.progress_lines import EVERY, ProgressLines
    from paramreuse.progress import ProgressEvent

    clock, console = _Clock(), Console(file=io.StringIO(), width=80, force_terminal=False)
    lines = ProgressLines(console, clock=clock)
    for stage, total, step in (("source", 300, 0.5), ("transfer", 40, 30.0)):  # many quick events, then slow ones
        for n in range(1, total + 1):
            clock.now += step
            lines(ProgressEvent(stage, n, total, {"run": f"plan 5 shots seed {n % 5}"} if stage == "transfer" else {}))
    printed = console.file.getvalue().splitlines()
    source = [line for line in printed if line.startswith("source")]
    assert source[0].startswith("source  1/300  elapsed 0:00:00  eta 0:02:30")  # 0.5 s a step: 299 left
    assert source[-1] == "source  300/300  elapsed 0:02:30  eta 0:00:00"
    assert len(source) <= 150 / EVERY + 2  # start, end, and at most one line per EVERY seconds between
    transfer = [line for line in printed if line.startswith("transfer")]
    assert transfer[0] == "transfer  1/40  elapsed 0:00:30  eta 0:19:30  run plan 5 shots seed 1"
    assert len(transfer) == 40 and transfer[-1].startswith("transfer  40/40  elapsed 0:20:00  eta 0:00:00")
    assert not any("-:--:--" in line or "eta ?" in line for line in printed)


def test_the_bars_eta_is_known_when_each_event_takes_longer_than_rich_averages_over():
    """The -:--:-- during best-depth: rich's ETA used the last 30 s of events, and a best-depth run takes longer."""
    from paramreuse.cli.progress_bar import ProgressBar
    from paramreuse.progress import ProgressEvent

    clock = _Clock()
    bar = ProgressBar(plain=False, clock=clock)
    bar.progress.console.quiet = True  # no live display in the test's stderr
    try:
        with bar:
            for n in (1, 2, 3):
                clock.now += 90.0
                bar(ProgressEvent("transfer", n, 10, {"run": f"best-depth 5 shots seed {n}"}))
            task = bar.progress.tasks[0]
            assert task.time_remaining == pytest.approx(7 * 90.0)
    finally:
        bar.progress.console.quiet = False


def test_a_redirected_verb_prints_progress_lines_on_stderr(fake_fmnist, tmp_path):
    result = cli("--data", "fashion-mnist", "--classes", "0-1", "--shots", "2", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    ends = [line for line in result.stderr.splitlines() if line.startswith("train  ")]
    assert ends and re.fullmatch(r"train  (\d+)/\1  elapsed \d+:\d\d:\d\d  eta 0:00:00.*", ends[-1]), result.stderr
    assert "train  " not in result.stdout


def test_output_sent_to_a_file_logs_its_progress_lines_before_the_results(fake_fmnist, tmp_path):
    """``paramreuse train ... > log``: the log gets the plain progress lines, once, then the results."""
    import os
    import subprocess
    import sys

    log = tmp_path / "log"
    with log.open("w") as stdout:
        done = subprocess.run([sys.executable, "-m", "paramreuse", "train", "--arch", "builtin:cnn?width=4", "--data",
                               "fashion-mnist", "--classes", "0-1", "--shots", "2", "--epochs", "1", "--out",
                               str(tmp_path / "out")], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300,
                              env=os.environ | {"PARAMREUSE_DATA": str(fake_fmnist)}, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = log.read_text().splitlines()
    ends = [i for i, line in enumerate(lines) if line.startswith("train  ")]
    assert ends and re.fullmatch(r"train  (\d+)/\1  elapsed \d+:\d\d:\d\d  eta 0:00:00.*", lines[ends[-1]]), lines
    assert "train  " not in done.stderr
    assert "model saved to" in "\n".join(lines[ends[-1] :])


@pytest.mark.parametrize("verb, usage", [("plan", "plan [OPTIONS] SOURCE TARGET"), ("compare", "compare [OPTIONS] SOURCE TARGET"),
                                         ("replace", "replace [OPTIONS] SOURCE TARGET"), ("transfer", "transfer [OPTIONS] SOURCE"),
                                         ("apply", "apply [OPTIONS] PLAN"), ("report", "report [OPTIONS] RUN_DIR")])  # fmt: skip
def test_usage_lines_name_arguments_in_capitals(verb, usage):
    from typer.testing import CliRunner

    from paramreuse.cli import app

    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and usage in result.output and "{" not in result.output.splitlines()[1], result.output


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
