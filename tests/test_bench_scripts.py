"""Every bench/ script runs: its argument parsing, and a tiny pair where a real run takes minutes."""

import runpy
import sys
from pathlib import Path

import pytest
import torch

from paramreuse.backends import LOCAL
from paramreuse.models import build_model
from paramreuse.study import DataConfig, StudyConfig
from paramreuse.training.loop import TrainConfig
from paramreuse.transfer.config import TransferConfig
from tests.conftest import TINY_ARCH

BENCH = Path(__file__).resolve().parents[1] / "bench"
WITH_ARGPARSE = sorted(p.name for p in BENCH.glob("*.py") if "argparse" in p.read_text())


def run_script(name: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCH / name), *args])
    runpy.run_path(str(BENCH / name), run_name="__main__")


@pytest.mark.parametrize("name", WITH_ARGPARSE)
def test_a_bench_script_parses_its_arguments(name, monkeypatch, capsys):
    with pytest.raises(SystemExit) as stop:
        run_script(name, "--help", monkeypatch=monkeypatch)
    assert stop.value.code == 0 and "usage:" in capsys.readouterr().out


def test_the_scripts_without_options_name_their_usage(monkeypatch):
    with pytest.raises(SystemExit) as stop:
        run_script("study_seeds.py", monkeypatch=monkeypatch)
    assert "usage: study_seeds.py RUN_DIR" in str(stop.value.code)
    with pytest.raises(FileNotFoundError):  # study_tables.py reads a study's results.json
        run_script("study_tables.py", str(BENCH / "no-such-run"), monkeypatch=monkeypatch)


def test_the_backends_benchmark_runs_the_studys_transfer_grid(fake_fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from backends import grid  # bench/backends.py, as the script imports it

    training = TrainConfig(epochs=1, batch_size=8, lr=1e-2)
    config = StudyConfig(arch=TINY_ARCH, data_dir=str(fake_fmnist_dir), target=DataConfig(classes="5-9", shots=2),
                         test_per_class=4,
                         transfer=TransferConfig(strategies=("scratch", "finetune-all"), shots=(), seeds=1,
                                                 training=training))  # fmt: skip
    torch.manual_seed(0)
    source = build_model(TINY_ARCH, 1, 5)
    seconds, doc = grid(LOCAL, source, config, tmp_path / "local")
    assert seconds > 0 and set(doc["strategies"]) == {"scratch", "finetune-all"}
    assert (tmp_path / "local" / "transfer" / "transfer.json").is_file()


def test_the_speed_benchmark_times_stages_from_the_files_a_study_writes(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import os

    from speed import stage_seconds, table  # bench/speed.py

    start = 1_000_000.0
    for i, name in enumerate(("source/model.safetensors", "target/train.json", "plan.json", "transfer/transfer.json")):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        os.utime(path, (start + 10 * (i + 1), start + 10 * (i + 1)))
    stages = stage_seconds(tmp_path, start)
    assert stages == {"S": 10.0, "T": 10.0, "evidence (cross-fit, sweep, plan, comparisons)": 10.0, "transfer grid": 10.0}
    record = {"quick": True, "jobs": 2, "load_before": [0.5], "load_after": [0.7], "decision": "reuse",
              "reusable_depth": 2, "recommended": "plan", "stages": stages, "grid": {"plan": 0.8, "scratch": 0.6}}
    old = record | {"jobs": 1, "wall": 50.0, "grid": {"plan": 0.8, "scratch": 0.62}}
    lines = table({("default", "old"): old, ("default", "new"): record | {"wall": 25.0},
                   ("default", "pair"): record | {"wall": 40.0, "walls": [38.0, 40.0]}}, "default")  # fmt: skip
    text = "\n".join(lines)
    assert "total (wall)" in text and "    2.00" in text  # 50 s old against 25 s new
    assert "largest |old - new| 0.0200" in text and "(ratio 1.60)" in text and max(map(len, lines)) <= 100


@pytest.mark.slow  # four quick studies of a tiny CNN on the fake data set
def test_the_speed_benchmark_quick_mode_runs_old_and_new_to_the_same_answer(fake_fmnist_dir, tmp_path, monkeypatch, capsys):
    args = ["--quick", "--cells", "default:old,default:new", "--out", str(tmp_path), "--data-dir", str(fake_fmnist_dir),
            "--arch", TINY_ARCH, "--min-steps", "4", "--jobs", "2"]  # fmt: skip
    run_script("speed.py", *args, monkeypatch=monkeypatch)
    first = capsys.readouterr().out
    assert "default:old: running" in first and "largest |old - new| 0.0000" in first and "same plan: yes" in first
    run_script("speed.py", *args, monkeypatch=monkeypatch)  # resumed: every cell has its record
    assert "default:new: recorded in" in capsys.readouterr().out
    assert {p.name for p in (tmp_path / "quick").glob("*.json")} == {"default-old.json", "default-new.json"}


def test_the_speed_benchmark_replays_what_the_bound_would_need_from_the_stages(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from speed import limits  # bench/speed.py

    stages = {"S": 60.0, "T_full": 40.0, "transfer grid": 100.0}
    old, new = {"wall": 300.0, "stages": stages | {"transfer grid": 150.0}}, {"wall": 210.0, "stages": stages}
    lines = limits({("default", "old"): old, ("default", "new"): new}, "default", speedup=1.5)
    by = {line[:72].strip(): line[72:].split() for line in lines[3:]}
    assert "at most 1.33x" in lines[2]  # two one-thread workers against one process on two threads at 1.5x
    assert by["as measured"] == ["210.0", "1.43"]
    assert by["the rest overlapped with the grid, at best"] == ["185.0", "1.62"]  # 60 + 100 + 50 / 2
    assert by["S kept from an earlier study (the old path too)"] == ["150.0", "1.60"]  # 240 / 150
    assert by["S, T_full on both cores at 2x one thread"] == ["185.0", "1.62"]  # 210 - 100 / 4
    assert by["the grid at twice the old path's speed"] == ["185.0", "1.62"]  # 210 - 100 + 150 / 2
    assert max(map(len, lines)) <= 100 and limits({}, "default", 1.5) == []
