"""Executors: local and Ray run the same jobs to the same results; failures are retried or named.

One local Ray instance (2 CPUs) serves the whole module. Job functions live at module level so
that Ray workers can import them.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import ray
import torch
from typer.testing import CliRunner

from paramreuse.backends import (
    Checkpoint,
    DataSpec,
    JobError,
    JobFailed,
    LocalExecutor,
    RayExecutor,
    RunContext,
    make_executor,
)
from paramreuse.cli import app
from paramreuse.errors import DataError
from paramreuse.judge.replacement import (
    SweepConfig,
    SweepInputs,
    chunk_rows,
    image_digest,
    replacement_sweep,
    row_specs,
    sweep_units,
)  # fmt: skip
from paramreuse.judge.replacement_jobs import SWEEP_SOURCE_FILE
from paramreuse.models import ModelInfo, save_checkpoint
from paramreuse.rank.ranking import rank_sources
from paramreuse.study import StudyConfig, load_study_data, quick, target_spec
from paramreuse.training.loop import TrainConfig
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import RUNS_LOG, run_transfer
from paramreuse.transfer.strategies import unit_names
from tests.conftest import TINY_ARCH, make_fake_fashion_mnist, untimed

runner = CliRunner()
TINY_TRAIN = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Local runs use one torch thread, as each Ray job does (--cpus-per-job 1): CPU sums split over
    another number of threads round differently, and the equality below is bit for bit (docs/ray.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cluster():
    here = Path(__file__).resolve().parent  # workers import this module's job functions, as pytest named it
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2,
             runtime_env={"env_vars": {"PYTHONPATH": path}})  # fmt: skip
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def on_ray(cluster):
    with RayExecutor(cpus_per_job=1, max_retries=2) as executor:
        yield executor


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Enough images per class for a 500-image evaluation set, so that early stopping can act."""
    return str(make_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist-large"), train_per_class=130, test_per_class=20))


@pytest.fixture(scope="module")
def checkpoints(trained_pair, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    paths = []
    for name, model in zip(("s", "t"), trained_pair):
        paths.append(str(save_checkpoint(root / name / "model.safetensors", model, ModelInfo(TINY_ARCH, 1, 5))))
    return paths


def double(x: int) -> int:
    return 2 * x


def fail(x):
    if x == "fine":
        return x
    if x == "bad input":
        raise DataError("no such data set")
    raise ValueError(f"bug on {x}")


def die(_x):
    os.kill(os.getpid(), signal.SIGKILL)


def die_on_first_attempt(fn, marker: str, spec):
    """Run ``fn(spec)``, except that the first job to get here kills its own worker process."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(spec)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


class KillOneWorker:
    """A Ray executor on which one job's worker is killed once, mid-job."""

    def __init__(self, inner: RayExecutor, marker):
        self.inner, self.marker = inner, str(marker)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def map_unordered(self, fn, jobs):
        return self.inner.map_unordered(functools.partial(die_on_first_attempt, fn, self.marker), jobs)


def test_local_executor_runs_jobs_in_order_and_names_a_failing_one():
    local = LocalExecutor()
    assert list(local.map_unordered(double, [("a", 1), ("b", 2)])) == [("a", 2), ("b", 4)]
    with pytest.raises(ValueError, match="bug on 3") as caught:
        list(local.map_unordered(fail, [("third", 3)]))
    assert "(in job third)" in caught.value.__notes__


def test_ray_executor_runs_the_same_jobs_with_one_cpu_each(on_ray):
    assert on_ray.workers == 2 and on_ray.remote and str(on_ray.job_device("cuda")) == "cpu"
    jobs = [(str(i), i) for i in range(6)]
    assert sorted(on_ray.map_unordered(double, jobs)) == sorted(LocalExecutor().map_unordered(double, jobs))


def test_a_failing_job_is_reported_by_name_never_dropped(on_ray):
    with pytest.raises(JobFailed, match=r"job b failed: ValueError: bug on b"):
        list(on_ray.map_unordered(fail, [("a", "fine"), ("b", "b"), ("c", "fine")]))
    with pytest.raises(JobError, match=r"job data: no such data set"):  # bad input: exit 2 in the CLI
        list(on_ray.map_unordered(fail, [("data", "bad input")]))


def test_a_job_whose_worker_always_dies_is_reported_after_its_retries(cluster):
    with RayExecutor(max_retries=1) as executor, pytest.raises(JobError, match=r"job doomed: its worker died 2 times"):
        list(executor.map_unordered(die, [("doomed", 0)]))


def test_sweep_rows_are_identical_on_ray_and_local(trained_pair, checkpoints, data_dir, tmp_path, on_ray):
    s, t = trained_pair
    spec = DataSpec.of("fashion-mnist", classes="0-4", shots=10, val_per_class=100, seed=0, data_dir=data_dir)
    data = spec.load()
    config = SweepConfig(tolerance=0.015, bootstrap=200, batch_size=100)  # zero drops: all 500 images
    local = replacement_sweep(s, t, data.val, data.train, config, log_path=tmp_path / "local" / "rows.jsonl")
    log = tmp_path / "ray" / "rows.jsonl"
    inputs = SweepInputs(Checkpoint(checkpoints[1]), spec)
    remote = replacement_sweep(s, t, data.val, data.train, config, log_path=log, executor=on_ray, inputs=inputs)
    assert len(chunk_rows(row_specs(sweep_units(s, t), config), t, on_ray.workers)) == 2  # two jobs, one per worker
    assert any(r.stopped_early for r in remote.rows) and any(not r.stopped_early for r in remote.rows)
    assert [r.to_dict() for r in remote.rows] == [r.to_dict() for r in local.rows]
    assert (remote.baseline, remote.mode, remote.fallback) == (local.baseline, "cached", None)
    assert not log.exists() and not (log.parent / SWEEP_SOURCE_FILE).exists()


def test_a_worker_with_other_data_is_refused(trained_pair, checkpoints, data_dir, tmp_path, on_ray):
    s, t = trained_pair
    data = DataSpec.of("fashion-mnist", classes="0-4", shots=10, val_per_class=20, seed=0, data_dir=data_dir).load()
    other = DataSpec.of("fashion-mnist", classes="0-4", shots=10, val_per_class=20, seed=1, data_dir=data_dir)
    inputs = SweepInputs(Checkpoint(checkpoints[1]), other)
    with pytest.raises(JobError, match="val, calibration differ"):
        replacement_sweep(s, t, data.val, data.train, SweepConfig(params=("unit",)), log_path=tmp_path / "rows.jsonl",
                          executor=on_ray, inputs=inputs)  # fmt: skip


def test_transfer_grid_on_ray_equals_local_after_an_interruption_and_a_killed_worker(
    trained_pair, data_dir, tmp_path, on_ray
):
    s, _ = trained_pair
    plan = dict.fromkeys(unit_names(s), "reuse-finetuned") | {"features.7.0": "reinit"}
    config = TransferConfig(strategies=("scratch", "finetune-all", "plan", "best-depth"), shots=(2,), seeds=2,
                            training=TINY_TRAIN, test_per_class=10)  # fmt: skip
    grid = (Source(TINY_ARCH, s.state_dict()), plan, "fashion-mnist", "5-9")
    local = run_transfer(*grid, RunContext(tmp_path / "local"), config=config, data_dir=data_dir)

    def stop_after_three(event):
        if event.completed == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ray = RunContext(tmp_path / "ray", progress=stop_after_three, executor=on_ray)
        run_transfer(*grid, ray, config=config, data_dir=data_dir)
    assert len((tmp_path / "ray" / RUNS_LOG).read_text().splitlines()) == 1 + 3  # persisted as they arrived
    marker = tmp_path / "killed-worker"
    events = []
    retried = RunContext(tmp_path / "ray", progress=events.append, executor=KillOneWorker(on_ray, marker))
    doc = run_transfer(*grid, retried, config=config, data_dir=data_dir)
    assert int(marker.read_text()) != os.getpid()  # a worker was killed mid-job, and its job retried
    assert [e.completed for e in events] == list(range(1, 9))
    assert json.dumps(untimed(doc)) == json.dumps(untimed(local))  # every run bit for bit, the summary too


def test_ranking_sources_on_ray_equals_local(checkpoints, data_dir, tmp_path, on_ray):
    spec = DataSpec.of("fashion-mnist", classes="5-9", shots=10, seed=0, data_dir=data_dir)
    data = spec.load()
    local = rank_sources(checkpoints, data, RunContext(tmp_path / "local"))
    remote = rank_sources(checkpoints, data, RunContext(tmp_path / "ray", executor=on_ray), data_spec=spec)
    assert [r.name for r in remote.rows] == [r.name for r in local.rows] and {r.name for r in local.rows} == {"s", "t"}
    assert [r.values() for r in remote.rows] == [r.values() for r in local.rows]
    assert remote.ranks == local.ranks and (tmp_path / "ray" / "s" / "target" / "model.safetensors").is_file()


def test_study_target_spec_loads_the_study_target(data_dir):
    config = quick(StudyConfig(data_dir=data_dir))
    target, loaded = target_spec(config).load(), load_study_data(config).target
    for split in ("train", "val", "test"):
        assert image_digest(getattr(target, split)) == image_digest(getattr(loaded, split))


def test_cli_backend_ray_runs_and_bad_backend_options_exit_2(checkpoints, data_dir, tmp_path, monkeypatch, cluster):
    rank = ["rank", *checkpoints, "--target", "fashion-mnist", "--classes", "5-9", "--shots", "5", "--no-ours",
            "--data-dir", data_dir, "--device", "cpu"]  # fmt: skip
    result = runner.invoke(app, [*rank, "--out", str(tmp_path / "ray"), "--format", "json", "--backend", "ray"])
    assert result.exit_code == 0, result.output
    assert {row["name"] for row in json.loads(result.stdout)["rows"]} == {"s", "t"}
    too_big = runner.invoke(app, [*rank, "--out", str(tmp_path), "--backend", "ray", "--cpus-per-job", "64"])
    assert too_big.exit_code == 2 and "asks for 64 CPU(s) but the Ray cluster has 2" in too_big.output
    address = runner.invoke(app, [*rank, "--out", str(tmp_path), "--address", "auto"])
    assert address.exit_code == 2 and "use it with --backend ray" in address.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    missing = runner.invoke(app, [*rank, "--out", str(tmp_path), "--backend", "ray"])
    assert missing.exit_code == 2 and "pip install 'paramreuse[ray]'" in missing.output
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1
    assert isinstance(make_executor("local"), LocalExecutor)
