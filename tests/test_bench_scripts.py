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
from paramreuse.transfer.grid import TransferConfig
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
