"""Executors: run a study's independent jobs in this process or in local worker processes (``local``,
``--jobs``), or as Ray tasks (``ray``).

A *job* is a module-level function applied to a picklable spec (checkpoint paths, a
:class:`DataSpec`, config dataclasses, seeds) that returns result rows. Both executors call the
same job function, so their results agree by construction. ``map_unordered`` yields each
``(key, result)`` as it finishes, so callers persist rows as they arrive and skip finished keys
when they resume. A failed job is never dropped: it is retried (Ray: when its worker dies) or
raised as an error that names it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import torch
from safetensors.torch import save

from paramreuse.cores import lent, usable_cores
from paramreuse.data import load_task
from paramreuse.errors import ParamreuseError
from paramreuse.models import load_checkpoint
from paramreuse.pool import JobError, JobFailed, ProcessExecutor
from paramreuse.progress import Progress
from paramreuse.results import write_atomic

BACKENDS = ("local", "ray")
INSTALL_HINT = "pip install 'paramreuse[ray]'"
RETRIED_ERRORS = (OSError, TimeoutError)  # transient (a shared file system, a slow node); others are deterministic

Jobs = Iterable[tuple[str, Any]]


# What the fork server of local workers imports once: the job functions' modules and this run's main module.
PRELOAD = ("torch", "paramreuse", "paramreuse.rank.ranking", "paramreuse.judge.replacement_jobs", "__main__")


@dataclass(frozen=True)
class DataSpec:
    """A task as a job receives it: the arguments of :func:`paramreuse.data.load_task`.

    Workers load the data themselves, so its files must be visible to them at the same path.
    """

    name: str
    options: dict = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, **options: Any) -> DataSpec:
        return cls(name, options)

    def load(self):
        return load_task(self.name, **self.options)


@dataclass(frozen=True)
class Checkpoint:
    """A model as a job receives it: a checkpoint path, with ``arch`` for plain state dicts."""

    path: str
    arch: str | None = None

    def load(self) -> torch.nn.Module:
        return load_checkpoint(self.path, self.arch)[0].eval()


class Executor(Protocol):
    """Where independent jobs run. ``remote`` executors run them in other processes, which load
    their inputs from the spec; ``workers`` jobs run at once; ``job_device`` is the device a job
    should use when the caller asked for ``device``."""

    name: str
    remote: bool
    workers: int

    def job_device(self, device: torch.device | str) -> torch.device | str: ...

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Jobs) -> Iterator[tuple[str, Any]]:
        """``(key, fn(spec))`` for every ``(key, spec)`` of ``jobs``, each as soon as it is done."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Runs every job in this process, one after the other, in the order given."""

    name, remote, workers = "local", False, 1

    def job_device(self, device: torch.device | str) -> torch.device | str:
        return device

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Jobs) -> Iterator[tuple[str, Any]]:
        for key, spec in jobs:
            try:
                result = fn(spec)
            except Exception as exc:
                exc.add_note(f"(in job {key})")
                raise
            yield key, result

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_ray():
    """The ray module, or a clear error saying how to install it."""
    try:
        import ray  # optional: the ray extra
    except ImportError:
        raise ParamreuseError(
            f"--backend ray needs Ray, which is not installed; install it with: {INSTALL_HINT}"
        ) from None
    return ray


class RayExecutor:
    """Runs jobs as Ray tasks, ``cpus_per_job`` CPUs (torch threads) and ``gpus_per_job`` GPUs each.

    Joins the Ray instance this process already has, else ``ray.init(address)`` (None: a new
    local instance, or ``$RAY_ADDRESS``), and shuts down only what it started. A job whose
    worker dies (killed, out of memory, node lost) is retried ``max_retries`` times by Ray, as is
    one that raises a transient ``OSError``; any other error is raised at once, naming the job.
    """

    name, remote = "ray", True

    def __init__(
        self, address: str | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
        max_retries: int = 3, **init: Any,
    ):  # fmt: skip
        if cpus_per_job <= 0 or gpus_per_job < 0:
            raise ParamreuseError(
                f"--cpus-per-job must be above 0 and --gpus-per-job at least 0, got {cpus_per_job}, {gpus_per_job}"
            )
        self.ray = require_ray()
        self.cpus_per_job, self.gpus_per_job, self.max_retries = cpus_per_job, gpus_per_job, max_retries
        self.started = not self.ray.is_initialized()
        if self.started:
            try:
                self.ray.init(address=address, logging_level=logging.WARNING, **init)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ParamreuseError(
                    f"cannot start or reach Ray at {address or 'a new local instance'} ({first}); "
                    "start a cluster with `ray start --head` and pass --address HOST:6379, or leave --address out"
                ) from None
        self.workers = self._capacity()
        self._task = None

    def _capacity(self) -> int:
        """How many jobs the cluster runs at once; a job too large for it is refused now, not left pending."""
        resources = self.ray.cluster_resources()
        kind, need = ("GPU", self.gpus_per_job) if self.gpus_per_job > 0 else ("CPU", self.cpus_per_job)
        have = resources.get(kind, 0.0)
        if have < need:
            self.close()
            raise ParamreuseError(
                f"each job asks for {need:g} {kind}(s) but the Ray cluster has {have:g}; "
                f"lower --{kind.lower()}s-per-job or add nodes with {kind}s"
            )
        return max(1, int(have // need))

    def job_device(self, device: torch.device | str) -> torch.device:
        """Jobs with a GPU share run on CUDA, the others on the CPU, whatever the driver uses."""
        return torch.device("cuda" if self.gpus_per_job > 0 else "cpu")

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Jobs) -> Iterator[tuple[str, Any]]:
        ray = self.ray
        if self._task is None:
            self._task = ray.remote(run_job).options(
                num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job, max_retries=self.max_retries,
                retry_exceptions=list(RETRIED_ERRORS),
            )  # fmt: skip
        threads = max(1, int(self.cpus_per_job))
        with lent():  # this process only waits on the cluster: its own cores go back to the machine's budget
            pending = {self._task.remote(fn, spec, threads): key for key, spec in jobs}
            try:
                while pending:
                    (ref,), _ = ray.wait(list(pending), num_returns=1)
                    key = pending.pop(ref)
                    yield key, self._result(ref, key)
            finally:  # interrupted or failed: leave no work running on the cluster
                for ref in pending:
                    ray.cancel(ref, force=True)

    def _result(self, ref, key: str) -> Any:
        errors = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except errors.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            if isinstance(cause, ParamreuseError):
                raise JobError(f"job {key}: {cause}") from None
            raise JobFailed(f"job {key} failed: {type(cause).__name__}: {cause}") from exc
        except errors.RayError as exc:  # the worker or its node died on every attempt
            raise JobError(
                f"job {key}: its worker died {self.max_retries + 1} times ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0]}); finished jobs are saved and a re-run resumes; "
                "if it ran out of memory, give each job more with --cpus-per-job or --gpus-per-job"
            ) from None

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_job(fn: Callable[[Any], Any], spec: Any, threads: int) -> Any:
    """What a Ray task runs: ``fn(spec)`` on ``threads`` torch threads, an iterator collected into a list."""
    torch.set_num_threads(threads)
    result = fn(spec)
    return list(result) if isinstance(result, Iterator) else result


LOCAL = LocalExecutor()


@dataclass(frozen=True)
class RunContext:
    """How one run goes, as one value: the folder it writes, its device, progress callback, executor and
    resume key (the fingerprint its stored results must carry to be reused)."""

    out: Path
    device: torch.device | str = "cpu"
    progress: Progress | None = None
    executor: Executor = LOCAL
    key: str = ""

    def under(self, name: str) -> RunContext:
        """The same run writing in the sub-folder ``name``."""
        return dataclasses.replace(self, out=Path(self.out) / name)

    def keyed(self, key: str) -> RunContext:
        return dataclasses.replace(self, key=key)


JOBS_VARIABLE = "PARAMREUSE_JOBS"


def default_jobs() -> int:
    """How many local jobs run at once unless told: ``$PARAMREUSE_JOBS``, else one per core this process may use."""
    told = os.environ.get(JOBS_VARIABLE, "").strip()
    if told:
        if not told.isdigit() or int(told) < 1:
            raise ParamreuseError(f"{JOBS_VARIABLE}={told!r}: give a whole number of jobs, at least 1")
        return int(told)
    return usable_cores()


def own_threads() -> int:
    """How many threads this process's own work (stages that are not jobs) asks for: every core it may use,
    unless ``OMP_NUM_THREADS`` says how many. It runs on as many of them as the core budget has free
    (:func:`paramreuse.cores.own_cores`)."""
    told = os.environ.get("OMP_NUM_THREADS", "")
    return int(told) if told.isdigit() and int(told) > 0 else usable_cores()


def make_executor(
    backend: str = "local", address: str | None = None, cpus_per_job: float = 1.0,
    gpus_per_job: float | None = None, device: torch.device | str = "cpu", jobs: int | None = None,
) -> Executor:  # fmt: skip
    """The executor for ``--backend``; ``gpus_per_job`` None means one GPU per job when ``device`` is CUDA.

    ``jobs`` (local only): how many jobs run at once, each in a worker process on one thread; 1 runs
    them here one after the other; None: :func:`default_jobs`.
    """
    if backend not in BACKENDS:
        raise ParamreuseError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if jobs is not None and jobs < 1:
        raise ParamreuseError(f"--jobs must be at least 1 (1: one job at a time, in this process), got {jobs}")
    if backend == "local":
        if address is not None:
            raise ParamreuseError("--address names a Ray cluster; use it with --backend ray")
        jobs = default_jobs() if jobs is None else jobs
        return LocalExecutor() if jobs == 1 else ProcessExecutor(jobs, preload=PRELOAD)
    if jobs is not None:
        raise ParamreuseError("--jobs sets local worker processes; with --backend ray, --cpus-per-job sizes each job")
    if gpus_per_job is None:
        gpus_per_job = 1.0 if torch.device(device).type == "cuda" else 0.0
    return RayExecutor(address, cpus_per_job, gpus_per_job)


def shippable_file(path: Path, state: dict[str, torch.Tensor]) -> str:
    """Write tensors that exist only in this process to ``path`` (safetensors), for workers to read."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return str(write_atomic(path, save(tensors)))


def remove_file(path: str | os.PathLike | None) -> None:
    if path is not None and os.path.exists(path):
        os.unlink(path)
