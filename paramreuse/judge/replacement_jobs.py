"""A replacement sweep's jobs: chunks of rows, run in this process or by the workers of a remote executor.

Workers load T, the data and S as swept from files and check them against the driver's digests.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from paramreuse.backends import Checkpoint, DataSpec, Executor, shippable_file
from paramreuse.data import ImageSet
from paramreuse.errors import DataError
from paramreuse.judge.replacement_engine import GraphCutter
from paramreuse.judge.replacement_rows import RowSpec, SweepConfig
from paramreuse.models import load_state_dict_checked, read_state_dict
from paramreuse.models.state_dicts import state_digest
from paramreuse.tasks import Task

SWEEP_SOURCE_FILE = "replacement.source.safetensors"  # S as swept, for the workers of a remote sweep


@dataclass(frozen=True)
class SweepInputs:
    """Where workers of a remote executor find the sweep's inputs.

    T is ``target`` (a checkpoint), the evaluation set is the validation split of ``data`` and
    the calibration set its training split. S as swept (aligned to T) exists only in memory; it
    is written next to the rows log for them.
    """

    target: Checkpoint
    data: DataSpec


@dataclass(frozen=True, eq=False)
class SweepJob:
    """One chunk of rows: live models and images (in-process), or files and a data spec (workers)."""

    source: nn.Module | str  # S as swept, or a state-dict file loaded into T's architecture
    target: nn.Module | Checkpoint
    val: ImageSet | DataSpec  # a DataSpec: its validation split (and its training split for calibration)
    calibration: ImageSet | None
    rows: tuple[RowSpec, ...]
    config: SweepConfig
    task: Task
    device: str | torch.device
    digests: dict = field(default_factory=dict)  # what a worker's loaded inputs must hash to


def job_inputs(job: SweepJob) -> tuple[nn.Module, nn.Module, ImageSet, ImageSet | None]:
    """The job's models and images: as given, or loaded from files and checked against the driver's."""
    if not isinstance(job.val, DataSpec):
        return job.source, job.target, job.val, job.calibration
    target = job.target.load()
    source = copy.deepcopy(target)
    load_state_dict_checked(source, read_state_dict(job.source), f"S as swept ({job.source})")
    data = job.val.load()
    val, calibration = data.val, (data.train if "calibration" in job.digests else None)
    seen = {"t": state_digest(target.state_dict()), "val": image_digest(val)}
    if calibration is not None:
        seen["calibration"] = image_digest(calibration)
    differ = [k for k, v in seen.items() if job.digests.get(k) != v]
    if differ:
        raise DataError(
            f"a worker loaded other inputs than the driver holds ({', '.join(differ)} differ, from {job.target.path} "
            f"and data {job.val.name!r}); make the same checkpoints and data visible to every worker at the same path"
        )
    return source, target, val, calibration


def image_digest(data: ImageSet) -> str:
    """A content hash of images, labels and masks (to check that a worker loaded the driver's data)."""
    masks = {} if getattr(data, "mask", None) is None else {"mask": data.mask}
    return state_digest({"x": data.x, "y": data.y} | masks)


def chunk_rows(rows: list[RowSpec], model: nn.Module, jobs: int) -> list[tuple[RowSpec, ...]]:
    """At most ``jobs`` chunks of similar cost, contiguous in cut order so that rows of a chunk share prefixes.

    A row's cost is the number of graph nodes it runs after its cut (every node when the model
    cannot be traced).
    """
    cutter = GraphCutter(model)
    size = max(len(cutter.nodes), 1)
    cuts = [cutter.cut(r.keys, r.recalibrate) if cutter.usable else 0 for r in rows]
    order = sorted(range(len(rows)), key=cuts.__getitem__)
    costs = [size - cuts[i] for i in order]
    share, chunks, current, spent = sum(costs) / max(jobs, 1), [], [], 0.0
    for i, cost in zip(order, costs):
        current.append(rows[i])
        spent += cost
        if spent >= share * (len(chunks) + 1) and len(chunks) < jobs - 1:
            chunks.append(tuple(current))
            current = []
    return chunks + ([tuple(current)] if current else [])


def remote_jobs(local: SweepJob, s_state: dict, t_digest: str, executor: Executor, inputs: SweepInputs | None,
                 log_path: str | Path | None) -> list[tuple[str, SweepJob]]:  # fmt: skip
    """Chunks of rows whose inputs are files and a data spec, with the digests workers check them against."""
    if inputs is None or log_path is None:
        raise ValueError(
            "a remote sweep needs inputs=SweepInputs(...) and a log_path: its workers load T, the data and S from files"
        )
    s_file = shippable_file(Path(log_path).with_name(SWEEP_SOURCE_FILE), s_state)
    digests = {"t": t_digest, "val": image_digest(local.val)}
    if local.calibration is not None:
        digests["calibration"] = image_digest(local.calibration)
    chunks = chunk_rows(list(local.rows), local.target, executor.workers)
    device = executor.job_device(local.device)
    remote = dataclasses.replace(local, source=s_file, target=inputs.target, val=inputs.data, calibration=None,
                                 device=device, digests=digests)  # fmt: skip
    return [(f"rows {i}/{len(chunks)}", dataclasses.replace(remote, rows=c)) for i, c in enumerate(chunks, start=1)]
