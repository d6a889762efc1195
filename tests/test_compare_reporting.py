"""What alignment did, where users read comparisons (CLI table, HTML report, bench tables);
``compare`` without data; tracing errors as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.study_tables import j3_tables
from paramreuse.align.specs import AlignmentError, apply_permutation, permutation_spec, random_permutation
from paramreuse.cli import app
from paramreuse.judge.assess import compare_pair
from paramreuse.judge.kernels import compare_models
from paramreuse.models import build_model
from paramreuse.report.html import RunFiles, _rmse
from paramreuse.results import units_aligned_text
from tests.conftest import TINY_ARCH

runner = CliRunner()
# A network whose classifier reads a flattened 32x32 map: it takes 32x32 images and nothing else.
NET_32 = """
from torch import nn

def build(in_channels=1, num_classes=3):
    return nn.Sequential(nn.Conv2d(in_channels, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 32 * 32, num_classes))
"""


def net_32() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 32 * 32, 3)).eval()


def permuted_copy(model: nn.Module, example: torch.Tensor) -> nn.Module:
    spec = permutation_spec(model, example)
    return apply_permutation(model, spec, random_permutation(spec, seed=3)).eval()


def save_plain(model: nn.Module, path: Path) -> str:
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    return str(path)


@pytest.fixture
def tiny_pairs(tmp_path) -> dict[str, list[str]]:
    """Plain state dicts of a tiny CNN: S, a permuted copy of S (independent) and S nudged (fine-tuned)."""
    torch.manual_seed(0)
    source = build_model(TINY_ARCH, 1, 5).eval()
    nudged = build_model(TINY_ARCH, 1, 5).eval()
    nudged.load_state_dict({k: v + 1e-3 * torch.randn_like(v) if v.is_floating_point() else v
                            for k, v in source.state_dict().items()})  # fmt: skip
    s = save_plain(source, tmp_path / "s.pt")
    return {
        "independent": [s, save_plain(permuted_copy(source, torch.zeros(2, 1, 28, 28)), tmp_path / "p.pt")],
        "finetuned": [s, save_plain(nudged, tmp_path / "f.pt")],
    }


def wide_output(monkeypatch) -> None:
    """Render rich tables at 200 columns, so that no cell is wrapped or cut."""
    from rich.console import Console

    monkeypatch.setattr("paramreuse.cli.common.out_console", Console(width=200))


def table_rows(text: str) -> dict[str, list[str]]:
    """Unit name -> cells, from a rich table's lines."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if cells and cells[0]:
            rows[cells[0]] = cells
    return rows


# -- the compare verb's table -------------------------------------------------------------------


def test_compare_table_says_which_units_were_aligned_and_how_many(tiny_pairs, tmp_path, monkeypatch):
    wide_output(monkeypatch)
    result = runner.invoke(app, ["compare", *tiny_pairs["independent"], "--arch", TINY_ARCH, "--out", str(tmp_path / "i")])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "i" / "comparison.json").read_text())
    rows = table_rows(result.stdout)
    assert rows["unit"][3] == "aligned"
    for layer in written["layers"]:
        assert rows[layer["name"]][3] == ("yes" if layer["aligned"] else "no")
    aligned, missed = written["alignment"]["units_aligned"], written["alignment"]["units_not_aligned"]
    assert aligned > 0 and f"{aligned} of {aligned + missed} units aligned" in result.stdout


def test_compare_of_a_finetuned_pair_prints_the_note_and_no_aligned_unit(tiny_pairs, tmp_path, monkeypatch):
    wide_output(monkeypatch)
    result = runner.invoke(app, ["compare", *tiny_pairs["finetuned"], "--arch", TINY_ARCH, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert written["alignment"]["method"] == "none" and written["lineage"] == "finetuned"
    units = len(written["layers"])
    assert f"0 of {units} units aligned, {units} not" in result.stdout
    assert f"alignment: {written['alignment']['note']}" in " ".join(result.stdout.split())
    assert {cells[3] for name, cells in table_rows(result.stdout).items() if name != "unit"} == {"no"}


def test_units_aligned_text_for_new_and_older_files():
    assert units_aligned_text({"units_aligned": 4, "units_not_aligned": 0}) == "4 of 4 units aligned"
    assert units_aligned_text({"units_aligned": 1, "units_not_aligned": 2}) == "1 of 3 units aligned, 2 not"
    assert units_aligned_text({"method": "weights"}) is None


# -- compare without data: an example input gives alignment the size -------------------------------------


def test_compare_pair_without_data_aligns_at_the_example_size(tmp_path):
    torch.manual_seed(0)
    model, example = net_32(), torch.zeros(2, 1, 32, 32)
    permuted = permuted_copy(model, example)
    comparison = compare_pair(permuted, model, None, tmp_path, align="weights", example=example)
    written = json.loads((tmp_path / "comparison.json").read_text())
    assert written["alignment"]["method"] == "weights"
    assert [layer["aligned"] for layer in written["layers"]] == [True, True]
    assert max(layer.rmse for layer in comparison.layers) < 1e-6 < min(layer.rmse_raw for layer in comparison.layers)
    with pytest.raises(AlignmentError, match="on 1x64x64 inputs"):  # without it: the default size, which it cannot take
        compare_models(permuted, model, align="weights")


def test_compare_cli_without_data_aligns_at_the_input_size(tmp_path):
    (tmp_path / "net.py").write_text(NET_32)
    arch = f"py:{tmp_path / 'net.py'}:build"
    torch.manual_seed(0)
    model = build_model(arch, 1, 3).eval()
    pair = [save_plain(permuted_copy(model, torch.zeros(2, 1, 32, 32)), tmp_path / "p.pt"), save_plain(model, tmp_path / "t.pt")]
    args = ["compare", *pair, "--arch", arch, "--input-size", "32", "--out", str(tmp_path / "c"), "--format", "json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["lineage"] == "independent" and printed["alignment"]["method"] == "weights"
    assert printed["alignment"]["units_aligned"] == 2 and all(layer["rmse"] < 1e-6 for layer in printed["layers"])


# -- tracing errors: one line, no traceback ----------------------------------------------------------------


def test_tracing_an_input_the_model_cannot_take_is_one_quiet_line(capfd):
    model = net_32()
    with pytest.raises(AlignmentError) as caught:
        permutation_spec(model, torch.zeros(2, 1, 28, 28))
    message = str(caught.value)
    assert "\n" not in message and "ShapeProp" not in message
    assert message.startswith("cannot trace Sequential on 1x28x28 inputs (mat1 and mat2 shapes cannot be multiplied")
    assert "--input-size N" in message and "--data" in message
    assert capfd.readouterr().err == ""  # torch's ShapeProp prints the node's traceback itself


@pytest.mark.parametrize(
    "eager_check, message",
    [(True, "T cannot take 1x28x28 inputs"), (False, "cannot trace Sequential on 1x28x28 inputs")],
    ids=["checked-before-alignment", "caught-while-tracing"],
)
def test_compare_cli_on_a_model_that_cannot_take_the_input_size(tmp_path, monkeypatch, eager_check, message):
    if not eager_check:  # reach the tracing itself, as a caller without the verb's own check would
        monkeypatch.setattr("paramreuse.cli.compare.check_pair_takes", lambda *args, **kwargs: None)
    (tmp_path / "net.py").write_text(NET_32)
    arch = f"py:{tmp_path / 'net.py'}:build"
    pair = [save_plain(build_model(arch, 1, 3), tmp_path / f"{n}.pt") for n in "st"]
    result = runner.invoke(app, ["compare", *pair, "--arch", arch, "--align", "weights", "--out", str(tmp_path / "c")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "--input-size" in lines[0], lines
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert not (tmp_path / "c" / "comparison.json").exists()


# -- the HTML report and the bench tables ----------------------------------------------------------------------


def older(comparison: dict) -> dict:
    """The same comparison as a file written before units said whether they were aligned."""
    alignment = {k: v for k, v in comparison["alignment"].items() if k not in ("units_aligned", "units_not_aligned", "note")}
    layers = [{k: v for k, v in layer.items() if k not in ("aligned", "reason")} for layer in comparison["layers"]]
    return {**comparison, "alignment": alignment, "layers": layers}


@pytest.fixture(scope="module")
def comparisons() -> dict[str, dict]:
    """comparison.json contents: an independent pair aligned back, a fine-tuned one, and an older file."""
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5).eval()
    permuted = permuted_copy(model, torch.zeros(2, 1, 28, 28))
    independent = compare_models(permuted, model, draws=1).to_dict()
    finetuned = compare_models(model, model, draws=1).to_dict()
    return {"target": independent, "full": finetuned, "scratch": older(independent)}


def test_report_rmse_table_has_the_aligned_column_counts_and_note(comparisons, tmp_path):
    run = RunFiles({}, {"thresholds": {"rmse_position": 0.5}}, {}, {}, comparisons)
    page = _rmse(run, tmp_path)
    tables = page.split("<h3>")[1:]
    assert len(tables) == 3
    new = comparisons["target"]
    units = len(new["layers"])
    assert "<th>aligned</th>" in tables[0] and tables[0].count("<td class='t'>yes</td>") == units
    assert f"alignment weights, {units} of {units} units aligned</h3>" in tables[0]
    assert f"alignment none, 0 of {units} units aligned, {units} not</h3>" in tables[1]
    assert tables[1].count("<td class='t'>no</td>") == units and "fine-tuned pair" in tables[1]
    assert "lineage independent, alignment weights</h3>" in tables[2]  # an older file: no count, no note
    assert tables[2].count("<td class='t'>–</td>") == units and "class='note'" not in tables[2]


def test_bench_j3_tables_show_the_aligned_column(comparisons, tmp_path):
    for name, file in (("target", "comparison.json"), ("full", "comparison-full.json"), ("scratch", "comparison-scratch.json")):
        (tmp_path / file).write_text(json.dumps(comparisons[name]))
    text = j3_tables(tmp_path)
    units = len(comparisons["target"]["layers"])
    assert "| unit | aligned | rmse_raw |" in text
    first = comparisons["target"]["layers"][0]["name"]
    assert f"| {first} | yes |" in text and f"| {first} | no |" in text and f"| {first} | – |" in text
    assert f"alignment weights, {units} of {units} units aligned" in text
    assert f"alignment none, 0 of {units} units aligned, {units} not (fine-tuned pair" in text
