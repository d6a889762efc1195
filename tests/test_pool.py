"""Local worker processes (--jobs): the cores they may use, the same results as one job at a time, a
worker that dies named by its job, Ctrl-C keeping what finished."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from paramreuse.backends import LocalExecutor, RunContext, default_jobs, make_executor
from paramreuse.cli import app
from paramreuse.cores import budget_folder, cgroup_cpus, own_cores, release, try_slots, usable_cores
from paramreuse.errors import DataError, ParamreuseError
from paramreuse.models import ModelInfo, save_checkpoint
from paramreuse.pool import JobError, JobFailed, ProcessExecutor
from paramreuse.training.loop import TrainConfig
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import RUNS_LOG, run_transfer
from tests.conftest import TINY_ARCH, untimed

runner = CliRunner()
GRID = TransferConfig(strategies=("scratch", "linear-probe", "best-depth"), shots=(2,), seeds=2, depth_candidates=3,
                      training=TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=4),
                      test_per_class=6)  # fmt: skip


def threads(_spec) -> tuple[int, int]:
    return torch.get_num_threads(), os.getpid()


def fail(x):
    if x == "bad input":
        raise DataError("no such data set")
    raise ValueError(f"bug on {x}")


def free_slots(_spec) -> int:
    """How many slots of the core budget are free while this job runs."""
    held = try_slots(budget_folder(), usable_cores(), usable_cores())
    release(held)
    return len(held)


def die_on_b(key: str) -> str:
    if key == "b":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)  # the others are still running when b dies
    return key


@pytest.fixture(scope="module")
def pool():
    with ProcessExecutor(2, preload=("torch", __name__)) as executor:  # the fork server imports this module once
        yield executor


def test_usable_cores_are_the_affinity_capped_by_the_cgroup_quota(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    assert cgroup_cpus(tmp_path) is None and usable_cores(tmp_path) == affinity  # no limit found: the affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpus(tmp_path) is None
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: one
    assert cgroup_cpus(tmp_path) == 0.5 and usable_cores(tmp_path) == 1
    (tmp_path / "cpu.max").write_text(f"{100000 * (affinity + 3)} 100000\n")  # a quota above the affinity
    assert usable_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000")  # cgroup v1: 1.5 cores
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpus(tmp_path) == 1.5 and usable_cores(tmp_path) == min(2, affinity)


def test_jobs_choose_the_executor_and_bad_counts_are_one_line(monkeypatch):
    assert isinstance(make_executor("local", jobs=1), LocalExecutor)
    monkeypatch.setenv("PARAMREUSE_JOBS", "3")
    assert default_jobs() == 3
    monkeypatch.delenv("PARAMREUSE_JOBS")
    assert default_jobs() == usable_cores()
    monkeypatch.setenv("PARAMREUSE_JOBS", "many")
    with pytest.raises(ParamreuseError, match="PARAMREUSE_JOBS='many'"):
        default_jobs()
    with pytest.raises(ParamreuseError, match="--jobs must be at least 1"):
        make_executor("local", jobs=0)


def test_workers_run_one_thread_each_and_name_a_failing_job(pool):
    results = dict(pool.map_unordered(threads, [(str(i), i) for i in range(4)]))
    assert {n for n, _ in results.values()} == {1} and len({pid for _, pid in results.values()} - {os.getpid()}) >= 1
    assert os.getpid() not in {pid for _, pid in results.values()}
    with pytest.raises(JobFailed, match=r"job b failed: ValueError: bug on b"):
        list(pool.map_unordered(fail, [("b", "b")]))
    with pytest.raises(JobError, match=r"job data: no such data set"):  # bad input: exit 2 in the CLI
        list(pool.map_unordered(fail, [("data", "bad input")]))


def test_the_driver_lends_its_cores_to_its_workers_while_they_run_its_jobs(pool):
    done = []

    def drive():
        with own_cores(usable_cores()):  # every slot: a worker could take none unless the driver lends them
            done.extend(pool.map_unordered(free_slots, [(str(i), i) for i in range(4)]))
            done.append(try_slots(budget_folder(), usable_cores(), usable_cores()))

    driver = threading.Thread(target=drive, daemon=True)  # a driver that kept its slots would wait here for ever
    driver.start()
    driver.join(timeout=120)
    assert len(done) == 5, "the workers never got a core"
    assert all(free < usable_cores() for _, free in done[:4])  # each job held a slot while it ran
    assert done[4] == []  # the driver took its slots back after


def test_a_worker_that_dies_is_reported_by_its_job_and_the_pool_starts_again(pool):
    with pytest.raises(JobError, match=r"^job b: its worker process died \(killed by SIGKILL\)"):
        list(pool.map_unordered(die_on_b, [("a", "a"), ("b", "b"), ("c", "c")]))
    assert sorted(pool.map_unordered(die_on_b, [("x", "x"), ("y", "y")])) == [("x", "x"), ("y", "y")]


def test_a_transfer_grid_is_the_same_with_one_and_two_jobs_and_resumes_after_ctrl_c(
    trained_pair, fake_fmnist_dir, tmp_path, pool
):
    s, _ = trained_pair
    grid = (Source(TINY_ARCH, s.state_dict()), None, "fashion-mnist", "5-9")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: sums split over other thread counts round differently
    try:
        one = run_transfer(*grid, RunContext(tmp_path / "one"), config=GRID, data_dir=str(fake_fmnist_dir))
    finally:
        torch.set_num_threads(before)

    def ctrl_c_after_two(event):
        if event.completed == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_transfer(*grid, RunContext(tmp_path / "two", progress=ctrl_c_after_two, executor=pool), config=GRID,
                     data_dir=str(fake_fmnist_dir))  # fmt: skip
    assert len((tmp_path / "two" / RUNS_LOG).read_text().splitlines()) == 1 + 2  # what finished is kept
    assert pool._pool is None  # its workers were stopped, none left running a job
    events = []
    two = run_transfer(*grid, RunContext(tmp_path / "two", progress=events.append, executor=pool), config=GRID,
                       data_dir=str(fake_fmnist_dir))  # fmt: skip
    assert [e.completed for e in events] == list(range(1, 7)) and events[-1].total == 6
    assert json.dumps(untimed(two)) == json.dumps(untimed(one))  # every run bit for bit, the summary too


@pytest.mark.slow  # two CLI runs, one with its own worker processes
def test_cli_jobs_option(trained_pair, fake_fmnist_dir, tmp_path):
    s, _ = trained_pair
    path = save_checkpoint(tmp_path / "s.safetensors", s, ModelInfo(TINY_ARCH, 1, 5))
    args = ["transfer", str(path), "--data", "fashion-mnist", "--classes", "5-9", "--shots", "2", "--seeds", "1",
            "--strategies", "scratch,linear-probe", "--min-steps", "4", "--data-dir", str(fake_fmnist_dir),
            "--device", "cpu", "--format", "json"]  # fmt: skip
    docs = []
    for jobs in ("1", "2"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / jobs), "--jobs", jobs])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(result.stdout))
    for name in ("scratch", "linear-probe"):
        assert docs[1]["strategies"][name]["mean"] == pytest.approx(docs[0]["strategies"][name]["mean"], abs=1e-6)
    bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--jobs", "0"])
    assert bad.exit_code == 2 and "--jobs must be at least 1" in bad.output and "Traceback" not in bad.output


def test_run_jobs_is_a_study_config_key_left_out_of_its_fingerprint(tmp_path):
    from paramreuse.config import ConfigError, load_toml
    from paramreuse.study import StudyConfig

    (tmp_path / "two.toml").write_text("[run]\njobs = 2\n")
    config = load_toml(StudyConfig, tmp_path / "two.toml")
    assert config.run.jobs == 2 and config.to_dict() == StudyConfig().to_dict()  # a run resumes with other jobs
    (tmp_path / "zero.toml").write_text("[run]\njobs = 0\n")
    with pytest.raises(ConfigError, match="jobs"):
        load_toml(StudyConfig, tmp_path / "zero.toml")


def test_the_main_process_asks_for_every_usable_core_unless_omp_num_threads_says(monkeypatch):
    from paramreuse.backends import own_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert own_threads() == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert own_threads() == usable_cores()
