"""The machine-wide core budget: processes side by side never hold more slots than cores, a killed holder's slot
comes free, a process waits for ``at_least`` and takes no more than is free, the driver lends its slots to its
workers, and ``off`` turns it off."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from paramreuse.cores import (
    CORES_VARIABLE,
    budget_folder,
    core_slots,
    lent,
    own_cores,
    release,
    take_turn,
    try_slots,
    usable_cores,
)
from paramreuse.pool import run_in_worker

FORK = multiprocessing.get_context("fork")  # the children only lock files: quick to start, no torch in them


@pytest.fixture
def budget(tmp_path, monkeypatch) -> Path:
    """A budget folder of this test's own."""
    monkeypatch.setenv(CORES_VARIABLE, str(tmp_path / "cores"))
    assert budget_folder() == tmp_path / "cores"  # made when first asked for
    return tmp_path / "cores"


def hold(log: str, want: int, at_least: int, seconds: float, times: int) -> None:
    """Take slots ``times`` times (a budget of 2), each for ``seconds``; log when each hold began and ended."""
    for _ in range(times):
        with core_slots(want, at_least, size=2) as n:
            start = time.monotonic()
            time.sleep(seconds)
            end = time.monotonic()
        with open(log, "a") as f:
            f.write(f"{start} {end} {n}\n")


def most_at_once(log: Path) -> int:
    """The most slots held at one moment, from the holders' logs (an end before a start at the same time)."""
    events = []
    for line in log.read_text().splitlines():
        start, end, n = line.split()
        events += [(float(start), 1, int(n)), (float(end), 0, -int(n))]
    held = most = 0
    for _, _, change in sorted(events):
        held += change
        most = max(most, held)
    return most


def side_by_side(log: Path, holders: list[tuple[int, int]], seconds: float = 0.15, times: int = 3) -> int:
    processes = [FORK.Process(target=hold, args=(str(log), want, at_least, seconds, times))
                 for want, at_least in holders]  # fmt: skip
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    return most_at_once(log)


def test_processes_side_by_side_never_hold_more_slots_than_the_budget(budget, tmp_path):
    # Three processes, one of them wanting both cores at once, on a budget of two.
    assert side_by_side(tmp_path / "log", [(1, 1), (1, 1), (2, 2)]) == 2
    assert len((tmp_path / "log").read_text().splitlines()) == 9  # every hold happened


def test_off_turns_the_budget_off(tmp_path, monkeypatch):
    monkeypatch.setenv(CORES_VARIABLE, "off")
    assert budget_folder() is None
    with core_slots(3, size=2) as n:  # nothing held: what was asked for
        assert n == 3
    # The same three processes now hold more than two at once: what the budget prevents.
    assert side_by_side(tmp_path / "log", [(1, 1), (1, 1), (2, 2)], seconds=0.5, times=1) > 2


def holds(ready, slots: int, seconds: float) -> None:
    with core_slots(slots, slots, size=slots):
        ready.set()
        time.sleep(seconds)


def test_a_killed_holder_frees_its_slots(budget):
    ready = FORK.Event()
    holder = FORK.Process(target=holds, args=(ready, 2, 60))
    holder.start()
    assert ready.wait(30)
    assert try_slots(budget, 2, 2) == []  # both taken
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=10)
    held = try_slots(budget, 2, 2)
    assert len(held) == 2  # no stale lock
    release(held)


def hold_one(budget: Path, seconds: float, released: list[float]) -> threading.Thread:
    """A thread holding one of two slots (its own lock, as another process's) for ``seconds``."""
    taken = threading.Event()

    def run():
        with core_slots(1, size=2):
            taken.set()
            time.sleep(seconds)
            released.append(time.monotonic())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert taken.wait(10)
    return thread


def test_want_is_capped_by_what_is_free_and_at_least_waits(budget):
    released = []
    other = hold_one(budget, 0.6, released)
    start = time.monotonic()
    with core_slots(2, size=2) as n:  # one is free: it takes that one at once
        assert n == 1 and time.monotonic() - start < 0.5
    with core_slots(2, at_least=2, size=2) as n:  # both: it waits for the other holder
        assert n == 2 and released and time.monotonic() >= released[0]
    other.join()
    with core_slots(5, at_least=5, size=2) as n:  # never more than the budget, nor waiting for more
        assert n == 2


def test_a_waiting_process_gets_the_next_slots_freed_not_workers_between_jobs(budget):
    """Two workers each give their slot back between jobs and take it again at once; one that waits for both
    gets them after a job or so, not when the workers have no job left."""
    last_job_ends = []

    def worker():
        for _ in range(12):
            with core_slots(1, size=2):
                time.sleep(0.1)
        last_job_ends.append(time.monotonic())

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for thread in workers:
        thread.start()
    time.sleep(0.25)
    with core_slots(2, at_least=2, size=2):
        taken = time.monotonic()
    for thread in workers:
        thread.join(timeout=30)
    assert taken < min(last_job_ends) - 0.3


def test_a_worker_holds_a_slot_while_it_runs_a_job(budget):
    def free_slots(_spec) -> int:
        held = try_slots(budget, 2, 2)
        free = len(held)
        release(held)
        return free

    assert free_slots(None) == 2
    assert run_in_worker(free_slots, None, "job") == 1  # as in a worker of the pool, on one thread


def test_the_driver_runs_on_what_it_holds_and_lends_it_to_its_workers(budget):
    before = torch.get_num_threads()
    released = []
    other = hold_one(budget, 0.4, released)
    with own_cores(2, size=2) as threads:  # the other holder has one: it runs on the other
        assert threads == 1 == torch.get_num_threads()
        with own_cores(2, size=2) as inner:  # re-entrant: no second take
            assert inner == 1
        other.join()
        with lent():  # waiting on its workers: every slot is free for them
            held = try_slots(budget, 2, 2)
            assert len(held) == 2
            release(held)
        assert torch.get_num_threads() == 2 and try_slots(budget, 2, 2) == []  # taken again: both free now
        with pytest.raises(KeyboardInterrupt), lent():
            raise KeyboardInterrupt
        held = try_slots(budget, 2, 2)  # not taken again after an error: it is ending
        assert len(held) == 2
        release(held)
    assert torch.get_num_threads() == before


def test_between_stages_the_driver_lets_a_waiting_process_in_and_takes_cores_freed(budget):
    got = []
    with own_cores(2, size=2) as threads:
        assert threads == 2
        waiter = threading.Thread(target=lambda: got.append(hold_one(budget, 0.4, [])), daemon=True)
        waiter.start()  # another run waiting for a core: it holds the turnstile
        time.sleep(0.3)
        assert not got and take_turn() == 1 == torch.get_num_threads()  # the next stage runs on the one left
        waiter.join(timeout=10)
        assert got
        got[0].join(timeout=10)  # the other run is done with its core
        assert take_turn() == 2 == torch.get_num_threads()


def test_a_verb_on_a_busy_machine_says_it_waits_for_a_core(budget, capsys):
    from paramreuse.cli.common import on_own_cores

    ready = FORK.Event()
    holder = FORK.Process(target=holds, args=(ready, usable_cores(), 0.5))  # another run holds every core
    holder.start()
    assert ready.wait(30)

    @on_own_cores
    def verb() -> int:
        return torch.get_num_threads()

    assert verb() >= 1
    holder.join(timeout=10)
    assert "waiting for a free core" in capsys.readouterr().err
