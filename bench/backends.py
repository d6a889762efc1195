"""Ray backend benchmark: the quick study's transfer grid, in this process and on Ray workers, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/backends.py [--workers 2] [--address HOST:6379] [--out runs/bench-ray]

S comes from the quick study (run once into --out, resumed afterwards). Its
transfer grid (every strategy x 10 shots x 2 seeds) then runs twice into fresh folders: with
the local executor, and as Ray tasks with one CPU each (a new local Ray instance with
--workers CPUs, or the cluster at --address). Prints the seconds, the ratio, whether both
transfer.json files are identical, and where Ray's overhead goes: import and start-up, the
first job of each worker (it imports torch and paramreuse), scheduling and serialisation per
task (no-op jobs), and loading inside each job against training.
"""

from __future__ import annotations

import argparse
import functools
import json
import pickle
import shutil
import statistics
import time
from pathlib import Path

import torch

from paramreuse.backends import LOCAL, DataSpec, RayExecutor, RunContext
from paramreuse.models import load_checkpoint, read_state_dict
from paramreuse.models.state_dicts import state_digest
from paramreuse.study import StudyConfig, quick, run_study, transfer_study
from paramreuse.training.run import MODEL_FILE
from paramreuse.transfer.grid import TRANSFER_FILE
from paramreuse.transfer.runs import TransferJob, transfer_job


def timed_job(fn, spec):
    """``fn(spec)`` with its wall time inside the worker added to the result."""
    start = time.perf_counter()
    result = dict(fn(spec))
    return result | {"_job_seconds": time.perf_counter() - start}


def nothing(spec) -> dict:
    return {}


class Timed:
    """An executor that records how long each job ran inside its worker, and its training seconds."""

    def __init__(self, inner):
        self.inner, self.jobs = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def map_unordered(self, fn, jobs):
        for key, result in self.inner.map_unordered(functools.partial(timed_job, fn), jobs):
            self.jobs.append({"job": result.pop("_job_seconds"), "training": result.get("seconds", 0.0)})
            yield key, result


def grid(executor, source, config, out: Path) -> tuple[float, dict]:
    """The study's transfer grid (each run makes its plan from its own shots) into a fresh ``out``, timed."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    doc = transfer_study(source, config, RunContext(out, "cpu", executor=executor))
    return time.perf_counter() - start, doc


def per_job(jobs: list[dict]) -> str:
    job, training = statistics.fmean(j["job"] for j in jobs), statistics.fmean(j["training"] for j in jobs)
    return f"{len(jobs)} jobs, mean {job:.2f} s inside the job, of which {training:.2f} s training"


def loading(config: StudyConfig, s_path: Path) -> tuple[float, float]:
    """Seconds to load one job's target data, and to read S's tensors (what every remote job does)."""
    tgt = config.target
    spec = DataSpec.of(tgt.data, classes=tgt.classes, shots=tgt.shots, seed=0, data_dir=config.data_dir,
                       test_per_class=config.test_per_class)  # fmt: skip
    times = {"data": [], "state": []}
    for _ in range(3):
        start = time.perf_counter()
        spec.load()
        times["data"].append(time.perf_counter() - start)
        start = time.perf_counter()
        read_state_dict(s_path)
        times["state"].append(time.perf_counter() - start)
    return min(times["data"]), min(times["state"])


def capacity(executor, config: StudyConfig, s_path: Path) -> tuple[float, float, float]:
    """Seconds of one real job in this process, alone on a worker, and (mean) with every worker running one."""
    state = read_state_dict(s_path)
    tgt = config.target
    data = DataSpec.of(tgt.data, classes=tgt.classes, shots=tgt.shots, seed=0, data_dir=config.data_dir,
                       test_per_class=config.test_per_class)  # fmt: skip
    job = TransferJob(config.arch, str(s_path), None, data, "scratch", 0, config.transfer, "cpu",
                      state_digest(dict(sorted(state.items()))))  # fmt: skip
    run = functools.partial(timed_job, transfer_job)
    here = run(job)["_job_seconds"]
    alone = [r["_job_seconds"] for _, r in executor.map_unordered(run, [("alone", job)])]
    jobs = [(str(i), job) for i in range(executor.workers)]
    together = [r["_job_seconds"] for _, r in executor.map_unordered(run, jobs)]
    return here, alone[0], statistics.fmean(together)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the new local Ray instance (one job each)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster instead, e.g. auto or HOST:6379")
    parser.add_argument("--data-dir", default=None, help="Fashion-MNIST folder (else $PARAMREUSE_DATA or Debian's)")
    parser.add_argument("--noop-tasks", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-ray"))
    args = parser.parse_args()

    config = quick(StudyConfig(data_dir=args.data_dir))
    prep_start = time.perf_counter()
    run_study(config, args.out / "study")  # S and the plan (resumed when already there)
    prep = time.perf_counter() - prep_start
    s_path = args.out / "study" / "source" / MODEL_FILE
    source, _ = load_checkpoint(s_path)

    local = Timed(LOCAL)
    local_seconds, local_doc = grid(local, source, config, args.out / "local")

    start = time.perf_counter()
    import ray  # optional (the ray extra); its import time is measured

    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    init = {} if args.address else {"num_cpus": args.workers, "include_dashboard": False}
    ray.init(address=args.address, log_to_driver=False, **init)
    init_seconds = time.perf_counter() - start
    on_ray = Timed(RayExecutor(cpus_per_job=1))
    start = time.perf_counter()
    list(on_ray.inner.map_unordered(nothing, [(str(i), i) for i in range(on_ray.workers)]))
    warm_seconds = time.perf_counter() - start
    ray_seconds, ray_doc = grid(on_ray, source, config, args.out / "ray")

    # Scheduling and serialisation: no-op jobs whose spec is a real job's (S as a file path, the data spec).
    spec = TransferJob(config.arch, str(s_path), None, DataSpec.of("fashion-mnist", classes="5-9", shots=10, seed=0),
                       "scratch", 0, config.transfer, "cpu", "")  # fmt: skip
    start = time.perf_counter()
    list(on_ray.inner.map_unordered(nothing, [(str(i), spec) for i in range(args.noop_tasks)]))
    noop_ms = (time.perf_counter() - start) / args.noop_tasks * 1000
    data_seconds, state_seconds = loading(config, s_path)
    here, alone, together = capacity(on_ray.inner, config, s_path)
    ray.shutdown()

    identical = json.dumps(local_doc) == json.dumps(ray_doc)
    ray_total = import_seconds + init_seconds + warm_seconds + ray_seconds
    title = f"local vs Ray ({on_ray.workers} workers, 1 CPU each)"
    print(f"## Transfer grid of the quick study: {len(local.jobs)} jobs, {title}\n")
    print("| step | seconds |\n|---|---|")
    rows = [
        ("local executor: the grid in this process (1 thread)", local_seconds),
        ("ray: import ray", import_seconds),
        ("ray: ray.init (" + ("join the cluster)" if args.address else "start a local instance)"), init_seconds),
        ("ray: first job on each worker (worker start, import torch and paramreuse)", warm_seconds),
        ("ray: the grid on warm workers", ray_seconds),
        ("ray: total", ray_total),
    ]
    for name, seconds in rows:
        print(f"| {name} | {seconds:.1f} |")
    print(f"\nratio local / ray: {local_seconds / ray_total:.2f} with start-up, {local_seconds / ray_seconds:.2f} "
          f"on warm workers; transfer.json identical: {'yes' if identical else 'NO'}")  # fmt: skip
    print(f"\nlocal: {per_job(local.jobs)}")
    print(f"ray:   {per_job(on_ray.jobs)}")
    print(f"per job, loading (also in the local run): target data {data_seconds * 1000:.0f} ms; "
          f"ray only: reading S's tensors {state_seconds * 1000:.0f} ms")  # fmt: skip
    print(f"scheduling and serialisation: {noop_ms:.1f} ms per no-op task ({args.noop_tasks} tasks on "
          f"{on_ray.workers} workers), spec pickled to {len(pickle.dumps(spec))} bytes")  # fmt: skip
    print(f"CPU capacity during the run: one scratch job took {here:.1f} s in this process, {alone:.1f} s alone on "
          f"a worker and {together:.1f} s with {on_ray.workers} at once on the workers: "
          f"{on_ray.workers * alone / together:.1f} of {on_ray.workers} cores were free for them")  # fmt: skip
    print(f"\nprepared S and the plan in {prep:.0f} s (the quick study); torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s) in the driver, ray {ray.__version__}")  # fmt: skip
    print(f"written: {args.out}/{{local,ray}}/transfer/{TRANSFER_FILE}")


if __name__ == "__main__":
    main()
