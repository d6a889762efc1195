"""Durability and determinism: a study killed with SIGKILL resumes to the results of an uninterrupted run,
and two runs with the same seed in different folders agree.

Every study here is a real ``python -m paramreuse study`` subprocess on the tiny data set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paramreuse.judge.crossfit import FOLD_LOG
from paramreuse.transfer.grid import RUNS_LOG
from tests.test_study import TINY_STUDY

# The tiny study with a shorter transfer stage (the transfer dominates its time).
CONFIG = TINY_STUDY.replace(
    "[transfer]\nseeds = 2\n",
    '[transfer]\nseeds = 2\nstrategies = ["scratch", "finetune-all", "plan"]\n[transfer.training]\nmin_steps = 10\n',
)
assert CONFIG != TINY_STUDY, "the tiny study's [transfer] table changed; update CONFIG"
ROOT = Path(__file__).resolve().parent.parent
# Runs the CLI with every finished sweep row / transfer run slowed down, so a kill lands mid-stage.
SLOW_LOGS = (
    "import sys, time; import paramreuse.results as r; add = r.JsonlLog.add; "
    "r.JsonlLog.add = lambda self, item: (add(self, item), time.sleep(0.05))[0]; "
    "from paramreuse.cli import main; sys.argv[0] = 'paramreuse'; main()"
)
# Differ between equal runs: timings, resume flags, paths, and fingerprints (they hash the path of S).
VOLATILE = {"seconds", "plan_seconds", "candidate_seconds", "train_seconds", "resumed", "timing", "environment", "path", "model", "file", "training", "fingerprint"}


def _env(data_dir: Path) -> dict:
    return os.environ | {"PARAMREUSE_DATA": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _args(config: Path, out: Path) -> list[str]:
    return ["study", "--config", str(config), "--out", str(out), "--quiet", "--device", "cpu"]


def _study(config: Path, out: Path, data_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "paramreuse", *_args(config, out)], env=_env(data_dir), cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_when(config: Path, out: Path, data_dir: Path, ready, slow: bool = False) -> None:
    """Start a study and SIGKILL it as soon as ``ready(out)`` holds; fail if it finished first."""
    head = [sys.executable, "-c", SLOW_LOGS] if slow else [sys.executable, "-m", "paramreuse"]
    proc = subprocess.Popen([*head, *_args(config, out)], env=_env(data_dir), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not ready(out):
            assert proc.poll() is None, f"the study ended before the kill point: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "kill point never reached"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "results.json").exists()


def _log_lines(path: Path, n: int):
    return lambda out: path.is_file() and len(path.read_text().splitlines()) > n


def _strip(obj):
    """Drop what may differ between equal runs (see VOLATILE)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _outcome(run: Path) -> dict:
    """Everything a user reads off a study: model metrics, comparisons, sweep rows, plan and transfer."""
    results = json.loads((run / "results.json").read_text())
    files = {name: json.loads((run / name).read_text()) for name in
             ("comparison.json", "comparison-scratch.json", "replacement.json", "plan.json", "transfer/transfer.json")}  # fmt: skip
    return _strip({"results": results, **files})


@pytest.fixture(scope="module")
def study_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference_run(study_config, fake_fmnist_dir, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "run"
    _study(study_config, out, fake_fmnist_dir)
    return out


@pytest.fixture(scope="module")
def reference(reference_run) -> dict:
    return _outcome(reference_run)


def test_same_seed_same_results_in_another_folder(reference, study_config, fake_fmnist_dir, tmp_path):
    _study(study_config, tmp_path / "again", fake_fmnist_dir)
    again = _outcome(tmp_path / "again")
    assert again == reference
    models = reference["results"]["models"]
    assert set(models) == {"source", "target", "scratch", "full"} and all("test_metric" in m for m in models.values())
    assert reference["plan.json"]["layers"] and reference["replacement.json"]["rows"]


def test_run_folder_records_versions_seed_and_device(reference_run):
    run = reference_run
    env = json.loads((run / "results.json").read_text())["environment"]
    assert {"paramreuse", "python", "torch", "device", "threads"} <= set(env) and env["device"] == "cpu"
    assert json.loads((run / "results.json").read_text())["config"]["seed"] == 0
    for stage in ("source", "target", "scratch", "full"):
        record = json.loads((run / stage / "train.json").read_text())
        assert record["seed"] == 0 and record["environment"]["device"] == "cpu" and record["environment"]["torch"]


def test_study_killed_mid_training_and_mid_sweep_resumes_to_the_same_results(reference, study_config, fake_fmnist_dir, tmp_path):
    run = tmp_path / "run"
    # 1. Killed once S is saved: T, T_scratch and T_full are still to train.
    _kill_when(study_config, run, fake_fmnist_dir, lambda out: (out / "source" / "train.json").is_file())
    assert not (run / "full" / "train.json").exists()
    source_stamp = (run / "source" / "model.safetensors").stat().st_mtime_ns
    # 2. Killed in the middle of the (cross-fitted) replacement sweep, with some rows in a fold's log.
    rows_log = run / FOLD_LOG.format(fold=1)
    _kill_when(study_config, run, fake_fmnist_dir, _log_lines(rows_log, 3), slow=True)
    finished_rows = len(rows_log.read_text().splitlines()) - 1
    assert finished_rows >= 3 and not (run / "replacement.json").exists()
    assert (run / "source" / "model.safetensors").stat().st_mtime_ns == source_stamp  # S was not retrained
    # 3. Killed in the middle of the transfer runs.
    runs_log = run / "transfer" / RUNS_LOG
    _kill_when(study_config, run, fake_fmnist_dir, _log_lines(runs_log, 1), slow=True)
    assert (run / "replacement.json").is_file() and not (run / "transfer" / "transfer.json").exists()
    assert json.loads((run / "replacement.json").read_text())["timing"]["resumed_rows"] >= finished_rows
    # 4. Run to completion: the same results as the uninterrupted run.
    _study(study_config, run, fake_fmnist_dir)
    assert _outcome(run) == reference
    results = json.loads((run / "results.json").read_text())
    assert all(m["resumed"] for m in results["models"].values())
    assert not rows_log.exists() and not runs_log.exists()  # logs are removed once their result file is written
    # Only debris a kill can leave: temporary files, never a half-written result.
    for path in run.rglob("*.json"):
        json.loads(path.read_text())


def test_a_moved_run_folder_resumes_every_stage(reference_run, study_config, fake_fmnist_dir, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(reference_run, moved)
    _study(study_config, moved, fake_fmnist_dir)
    results = json.loads((moved / "results.json").read_text())
    assert all(m["resumed"] for m in results["models"].values())  # nothing retrained: keys hold no paths
    assert _outcome(moved) == _outcome(reference_run)


@pytest.mark.slow  # two studies, one with its own worker processes
def test_ctrl_c_with_worker_processes_exits_130_and_resumes_to_the_results_of_one_job_at_a_time(
    reference, study_config, fake_fmnist_dir, tmp_path
):
    run, runs_log = tmp_path / "run", tmp_path / "run" / "transfer" / RUNS_LOG
    head = [sys.executable, "-c", SLOW_LOGS, *_args(study_config, run), "--jobs", "2"]
    proc = subprocess.Popen(head, env=_env(fake_fmnist_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: Ctrl-C reaches the driver and its workers
    deadline = time.monotonic() + 240
    try:
        while not _log_lines(runs_log, 1)(run):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stderr = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr[-2000:]
    kept = len(runs_log.read_text().splitlines()) - 1
    assert kept >= 1 and not (run / "transfer" / "transfer.json").exists()
    _study(study_config, run, fake_fmnist_dir)  # resumed, one job at a time (PARAMREUSE_JOBS=1 in the tests)
    assert _outcome(run) == reference
