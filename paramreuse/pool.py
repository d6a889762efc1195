"""Worker processes for independent jobs on this machine (``--jobs N``), each on its share of the cores.

Each worker runs one torch (and BLAS) thread by default, so ``N`` workers keep ``N`` cores busy,
and holds a slot of the machine's core budget per thread while it runs a job (``paramreuse.cores``):
another run's workers on the same machine wait for a free core instead of sharing one. A job's
seed travels with its spec, so results do not depend on ``N``. Workers ignore Ctrl-C: the driver stops
them, so an interrupted run keeps every job it had finished. A worker that dies (killed, out of
memory) is reported by the job it was running.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Self

from paramreuse.cores import core_slots, lent, limit_threads
from paramreuse.errors import ParamreuseError

PRELOAD = ("torch",)  # imported once by the fork server, so that each worker starts in a moment


class JobError(ParamreuseError):
    """A job failed on bad input, or its worker died on every attempt; finished jobs stay saved."""


class JobFailed(RuntimeError):
    """A job raised an unexpected error (a bug, not bad input); the message names the job."""


_started = None  # in a worker: where it says which job it starts (the driver names the job of a worker that dies)


def _start_worker(threads: int, started) -> None:
    global _started
    _started = started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)  # for what the job starts
    limit_threads(threads)


def _ready() -> int:
    return os.getpid()


def run_in_worker(fn: Callable[[Any], Any], spec: Any, key: str, threads: int = 1) -> Any:
    """``fn(spec)`` in a worker on ``threads`` slots of the core budget, an iterator collected into a list (what
    crosses back is a value)."""
    if _started is not None:
        _started.put((os.getpid(), key))
    with core_slots(threads, at_least=threads):  # as many as its threads: results do not depend on the budget
        result = fn(spec)
        return list(result) if isinstance(result, Iterator) else result


class ProcessExecutor:
    """Runs jobs in ``workers`` processes on this machine, ``threads`` compute threads each.

    Started at once in the background (a fork server imports torch once), so that the workers are
    ready by the time the first jobs come. ``remote``: jobs are sent to other processes, which load
    their inputs from the spec, as Ray's workers do.
    """

    name, remote = "local", True

    def __init__(self, workers: int, threads: int = 1, preload: tuple[str, ...] = PRELOAD):
        if workers < 1 or threads < 1:
            raise ParamreuseError(f"--jobs must be at least 1, got {workers}")
        self.workers, self.threads, self.preload = workers, threads, preload
        self._pool: ProcessPoolExecutor | None = None
        self._started = None
        self._start()

    def job_device(self, device):
        return device

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(self.preload))
            self._started = context.SimpleQueue()
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker,
                                             initargs=(self.threads, self._started))  # fmt: skip
            for _ in range(self.workers):  # start every worker now, while the driver works
                self._pool.submit(_ready)
        return self._pool

    def map_unordered(self, fn: Callable[[Any], Any], jobs: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        pool = self._start()
        with lent():  # this process only waits on its workers: its own cores are theirs meanwhile
            futures = {pool.submit(run_in_worker, fn, spec, key, self.threads): key for key, spec in jobs}
            try:
                for future in as_completed(futures):
                    yield futures[future], self._result(future, futures)
            finally:  # interrupted, failed or closed early: leave no job running
                if any(not f.done() for f in futures):
                    self._stop()

    def _result(self, future: Future, futures: dict[Future, str]) -> Any:
        key = futures[future]
        try:
            return future.result()
        except BrokenProcessPool:
            raise JobError(self._death(futures)) from None
        except ParamreuseError as exc:
            raise JobError(f"job {key}: {exc}") from None
        except Exception as exc:
            raise JobFailed(f"job {key} failed: {type(exc).__name__}: {exc}") from exc

    def _death(self, futures: dict[Future, str]) -> str:
        """Which job's worker died, and how: the job its worker last started (the pool ends the others with SIGTERM)."""
        started = {}
        while self._started is not None and not self._started.empty():
            pid, key = self._started.get()
            started[pid] = key
        processes = getattr(self._pool, "_processes", None) or {}
        dead = [(pid, p.exitcode) for pid, p in processes.items() if p.exitcode not in (None, 0, -signal.SIGTERM)]
        self._stop()
        unfinished = {key for f, key in futures.items() if not f.done() or f.exception() is not None}
        named = [started[pid] for pid, _ in dead if started.get(pid) in unfinished]
        code = dead[0][1] if dead else None
        how = "it ended" if code is None else f"exit code {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
        who = f"job {named[0]}" if len(named) == 1 else f"one of the jobs {', '.join(sorted(unfinished))}"
        return (f"{who}: its worker process died ({how}); finished jobs are saved and a re-run resumes; "
                "if it ran out of memory, run fewer at once with --jobs")  # fmt: skip

    def _stop(self) -> None:
        """Stop every worker now (jobs still running are dropped); the next map starts new ones."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(timeout=5)

    def close(self) -> None:
        """Stop the workers: every map has ended (its jobs done, or stopped), so none is running a job."""
        self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
