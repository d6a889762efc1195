"""The cores a process may use, and a budget of them shared by every paramreuse process of a user on a machine.

Usable cores are the process's CPU affinity (``taskset``, a batch scheduler's cpuset) capped by its
cgroup's CPU quota (a container's ``--cpus``), not the machine's core count.

The budget is one lock file per usable core in a folder (``$PARAMREUSE_CORES_DIR``, default
``<temp dir>/paramreuse-cores-<uid>``; ``off`` turns it off). A process computes only on slots it
holds (``flock``), so two studies side by side keep no more threads busy than there are cores
instead of fighting over them. The kernel drops a dead process's locks: no slot stays taken.
Slots are taken through a turnstile (one more lock, held only while taking), so a process that
waits gets the next slot freed rather than losing it, again and again, to workers between jobs.
A process waits only while it holds no slot, and holders never wait, so no two wait on each other.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no budget there
    fcntl = None

CGROUP = Path("/sys/fs/cgroup")
CORES_VARIABLE = "PARAMREUSE_CORES_DIR"
OFF = ("off", "none", "no", "0", "false")
POLL_SECONDS = 0.1  # how often a waiting process looks for a freed slot


def cgroup_cpus(root: Path = CGROUP) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cores(root: Path = CGROUP) -> int:
    """The cores this process may keep busy: its affinity, capped by its cgroup quota (rounded up), at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpus(root)
    return max(1, min(cores, math.ceil(quota)) if quota is not None else cores)


def limit_threads(threads: int) -> None:
    """At most ``threads`` compute threads in this process: torch's, and BLAS/OpenMP's where threadpoolctl sees them."""
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency: numpy's and scipy's BLAS
    except ImportError:
        return
    threadpool_limits(threads)


def budget_folder() -> Path | None:
    """Where the slots are (created when missing), or None when the budget is off or cannot be kept here."""
    told = os.environ.get(CORES_VARIABLE, "").strip()
    if fcntl is None or told.lower() in OFF:
        return None
    folder = Path(told) if told else Path(tempfile.gettempdir()) / f"paramreuse-cores-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid != os.getuid():
            raise PermissionError(f"{folder} belongs to another user")
    except OSError as exc:
        warnings.warn(f"no core budget shared with other runs ({exc}); set {CORES_VARIABLE} to a folder of yours",
                      stacklevel=2)  # fmt: skip
        return None
    return folder


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def try_slots(folder: Path, size: int, want: int) -> list[int]:
    """Up to ``want`` free slots among the first ``size``, locked now: their open file descriptors."""
    held = []
    for core in range(size):
        fd = _open(folder / f"core-{core}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append(fd)
        if len(held) == want:
            break
    return held


def release(held: list[int]) -> None:
    """Give slots back (closing a descriptor drops its lock)."""
    for fd in held:
        os.close(fd)
    held.clear()


def take_slots(folder: Path, size: int, want: int, at_least: int = 1, on_wait: Callable[[], None] | None = None
               ) -> list[int]:  # fmt: skip
    """As many free slots as there are, up to ``want``, waiting until ``at_least`` are free (both capped by ``size``).

    Waits holding no slot: what it found too few of goes back before it looks again. ``on_wait`` is
    called once when it has to wait (to say so).
    """
    want = max(1, min(want, size))
    at_least = max(1, min(at_least, want))
    turnstile = _open(folder / "turnstile")
    try:
        fcntl.flock(turnstile, fcntl.LOCK_EX)  # one taker at a time, in turn; holders of slots never queue here
        while True:
            held = try_slots(folder, size, want)
            if len(held) >= at_least:
                return held
            release(held)
            if on_wait is not None:
                on_wait()
                on_wait = None
            time.sleep(POLL_SECONDS)
    finally:
        os.close(turnstile)


@contextmanager
def core_slots(want: int, at_least: int = 1, *, size: int | None = None) -> Iterator[int]:
    """Hold free slots of the budget, up to ``want``, at least ``at_least`` (waiting for them); yields how many.

    ``size``: the cores in the budget (default: :func:`usable_cores`). With the budget off it holds
    nothing and yields ``want``.
    """
    folder = budget_folder()
    if folder is None:
        yield want
        return
    held = take_slots(folder, size or usable_cores(), want, at_least)
    try:
        yield len(held)
    finally:
        release(held)


class _Own:
    """The slots a process holds for its own work (the driver's stages), which it lends while it waits on workers."""

    def __init__(self) -> None:
        self.depth, self.want, self.size, self.folder, self.held = 0, 0, 0, None, []

    def take(self, on_wait: Callable[[], None] | None = None) -> int:
        self.held = take_slots(self.folder, self.size, self.want, 1, on_wait) if self.folder is not None else []
        threads = len(self.held) if self.folder is not None else self.want
        limit_threads(threads)
        return threads


_own = _Own()  # a fact about this process, like its thread count: one holder for its own work


@contextmanager
def own_cores(want: int, *, size: int | None = None, on_wait: Callable[[], None] | None = None) -> Iterator[int]:
    """Hold free slots (at least one, up to ``want``) for this process's own work, with as many torch and BLAS
    threads as it holds; yields that number. Re-entrant: an inner use keeps what the outer one holds.

    Its thread count is restored after. Inside it, :func:`lent` hands the slots back while the
    process only waits on other processes (its local workers). ``on_wait``: see :func:`take_slots`.
    """
    if _own.depth:
        _own.depth += 1
        try:
            yield max(1, len(_own.held)) if _own.folder is not None else _own.want
        finally:
            _own.depth -= 1
        return
    import torch

    before = torch.get_num_threads()
    _own.want, _own.size, _own.folder = max(1, want), size or usable_cores(), budget_folder()
    _own.depth = 1
    try:
        yield _own.take(on_wait)
    finally:
        release(_own.held)
        _own.depth, _own.folder = 0, None
        limit_threads(before)


def take_turn() -> int:
    """Between two stages of this process's own work: give its slots back and take the free ones again, behind any
    process waiting for one; so that a run beside others gets its share, and one left alone every core it wants.
    Returns its threads (unchanged outside :func:`own_cores`)."""
    import torch

    if not _own.held:
        return torch.get_num_threads()
    release(_own.held)
    return _own.take()


@contextmanager
def lent() -> Iterator[None]:
    """While this process waits on others (its workers), its own slots go back to the budget; it takes them
    again after, on as many threads as it then gets. Not after an error: it is ending its work."""
    if not _own.held:
        yield
        return
    release(_own.held)
    yield
    _own.take()  # not reached when the body raised (Ctrl-C must not wait here for a slot)
