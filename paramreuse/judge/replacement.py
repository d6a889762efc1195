"""Replacement sweeps (J1, J2): put S's values into T and measure the drop of T's metric.

Rows: every unit x parameter group (and the whole unit); cumulative units 1..k; all conv
kernels at once (J1), with T's batch norm kept and with its statistics re-estimated on target
training data. Each row carries its value, drop from T's baseline, and a 95% bootstrap CI of
the drop over evaluation samples (paired: the same samples for T and the variant).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from paramreuse.backends import LOCAL, Checkpoint, DataSpec, Executor, remove_file, shippable_file
from paramreuse.data import ImageSet
from paramreuse.errors import DataError
from paramreuse.judge.replacement_engine import Evaluated, Evaluator, GraphCutter, StopRule, Variant
from paramreuse.models import load_state_dict_checked, read_state_dict
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.units import Unit, pair_units
from paramreuse.progress import Progress, ProgressEvent
from paramreuse.results import JsonlLog, fingerprint, state_digest
from paramreuse.stats import difference_bounds, mean_ci
from paramreuse.tasks import CLASSIFICATION, Task

PARAM_GROUPS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit")
CONV_KINDS = ("conv1d", "conv2d", "conv3d", "convtranspose2d")
SWEEP_SOURCE_FILE = "replacement.source.safetensors"  # S as swept, for the workers of a remote sweep


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how. ``tolerance`` (metric units; None: the task's default) is the
    early-stopping boundary. ``recalibrate_bn`` applies to the per-unit rows; the cumulative
    rows (S's units 1..k in T) re-estimate BN statistics unless ``cumulative_recalibrate`` is
    off, because that variant ranks frozen depths (bench/README.md). ``keep_diffs`` keeps the
    per-sample differences on every row (for pooling folds)."""

    params: tuple[str, ...] = PARAM_GROUPS
    recalibrate_bn: bool = False
    cached: bool = True
    adaptive: bool = True
    tolerance: float | None = None
    batch_size: int = 250
    bootstrap: int = 1000
    seed: int = 0
    max_calibration: int = 1000
    cumulative_recalibrate: bool = True
    keep_diffs: bool = False
    network_rows: bool = True  # the two J1 rows (all conv kernels); a plan made from the curve alone skips them
    cumulative_rows: bool = True  # the curve of S's units 1..k in T; J1 alone skips it

    def __post_init__(self) -> None:
        from paramreuse.config import DROP_BOUND, check_at_least, check_choice

        for group in self.params:
            check_choice("params", group, PARAM_GROUPS)
        check_at_least(self, ("tolerance",), 0, DROP_BOUND)
        check_at_least(self, ("batch_size", "bootstrap", "max_calibration"), 1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RowSpec:
    id: str
    kind: str  # unit | cumulative | network
    layer: str
    params: str
    keys: tuple[str, ...]
    recalibrate: bool = False
    depth: int | None = None


@dataclass(frozen=True)
class Row:
    id: str
    kind: str
    layer: str
    params: str
    value: float
    drop: float
    ci: tuple[float, float]
    n: int
    stopped_early: bool
    recalibrated: bool
    depth: int | None = None
    diffs: tuple[float, ...] | None = None  # per-sample drops, when the sweep keeps them

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Sweep:
    metric: str
    baseline: float
    rows: tuple[Row, ...]
    config: SweepConfig
    mode: str
    fallback: str | None
    seconds: float
    samples: int
    resumed_rows: int = 0
    extra: dict = field(default_factory=dict)

    def by_kind(self, kind: str) -> list[Row]:
        return [r for r in self.rows if r.kind == kind]

    def to_dict(self) -> dict:
        row = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("kind", "depth", "diffs")}  # noqa: E731
        return {
            "metric": self.metric,
            "baseline": self.baseline,
            "tolerance": self.config.tolerance,
            "rows": [row(r) for r in self.by_kind("unit")],
            "cumulative": [{"depth": r.depth, **row(r)} for r in self.by_kind("cumulative")],
            "network": {r.params: row(r) for r in self.by_kind("network")},
            "timing": {
                "seconds": self.seconds,
                "mode": self.mode,
                "adaptive": self.config.adaptive,
                "fallback": self.fallback,
                "samples_evaluated": sum(r.n for r in self.rows),
                "samples_full": self.samples * len(self.rows),
                "resumed_rows": self.resumed_rows,
            },
            "config": self.config.to_dict(),
        } | self.extra


def sweep_units(source: nn.Module, target: nn.Module) -> tuple[Unit, ...]:
    """The paired units of S and T, without T's task head (its classes are not S's)."""
    head = head_module_name(target)
    return tuple(u for u in pair_units(source, target) if not in_head(u.name, head))


def row_specs(units: tuple[Unit, ...], config: SweepConfig) -> list[RowSpec]:
    """Per unit x group rows, cumulative depths, and the two J1 rows."""
    rec = config.recalibrate_bn
    rows = []
    for u in units:
        for p in config.params:
            keys = u.keys if p == "unit" else (u.group(p).keys if p in u.group_names else ())
            if keys:
                rows.append(RowSpec(f"unit:{u.name}:{p}:{rec}", "unit", u.name, p, keys, rec))
    cum = config.cumulative_recalibrate
    for k in range(1, len(units) + 1 if config.cumulative_rows else 1):
        keys = tuple(key for u in units[:k] for key in u.keys)
        rows.append(RowSpec(f"depth:{k}:{cum}", "cumulative", units[k - 1].name, f"units 1..{k}", keys, cum, k))
    if not config.network_rows:
        return rows
    kernels = tuple(k for u in units if u.kind in CONV_KINDS for k in u.group("conv.weight").keys)
    rows.append(RowSpec("network:kept", "network", "all conv", "conv_kernels_bn_kept", kernels, False))
    rows.append(RowSpec("network:recal", "network", "all conv", "conv_kernels_bn_recalibrated", kernels, True))
    return rows


def _batches(data: ImageSet, size: int, seed: int, device, task: Task = CLASSIFICATION) -> list[tuple[torch.Tensor, torch.Tensor]]:
    # A fixed random order: an early stop then sees a random sample of the evaluation set.
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x, y = data.x[order], task.targets(data)[order]
    return [(x[i : i + size].to(device), y[i : i + size].to(device)) for i in range(0, len(y), size)]


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


def sweep_rows(job: SweepJob) -> Iterator[dict]:
    """Evaluate one chunk of rows; yields a header (T's baseline, the engine mode), then each row as a dict."""
    evaluator, s_state = _evaluator(job)
    yield _header(evaluator)
    variants = [_variant(spec, s_state) for spec in job.rows]
    for i, result in evaluator.evaluate_all(variants, _stop_rule(job.config)):
        yield _record(job.rows[i], result, evaluator.baseline, job)


def _evaluator(job: SweepJob) -> tuple[Evaluator, dict[str, torch.Tensor]]:
    """T's evaluator on the job's images (T's baseline scored), and S's values."""
    source, target, val, calibration = _job_inputs(job)
    config, device = job.config, job.device
    source, target = source.to(device).eval(), target.to(device).eval()
    s_state = {k: v.detach() for k, v in source.state_dict().items()}
    calib = [] if calibration is None else [b for b, _ in _batches(_first(calibration, config.max_calibration), config.batch_size, config.seed, device)]
    batches = _batches(val, config.batch_size, config.seed, device, job.task)
    return Evaluator(target, batches, job.task.scores, calib, cached=config.cached), s_state


def _header(evaluator: Evaluator) -> dict:
    return {"baseline": float(evaluator.baseline.mean()), "mode": evaluator.mode,
            "fallback": evaluator.cutter.fallback if evaluator.cutter else None}  # fmt: skip


def _stop_rule(config: SweepConfig) -> StopRule | None:
    return StopRule(config.tolerance) if config.adaptive else None


def _variant(spec: RowSpec, s_state: dict[str, torch.Tensor]) -> Variant:
    return Variant({k: s_state[k] for k in spec.keys}, spec.recalibrate)


def _record(spec: RowSpec, result: Evaluated, baseline_scores: torch.Tensor, job: SweepJob) -> dict:
    """One evaluated row as the dict the rows log holds."""
    config, n = job.config, len(result.scores)
    diffs = baseline_scores[:n] - result.scores
    kept = tuple(diffs.tolist()) if config.keep_diffs else None
    ci = mean_ci(diffs, config.bootstrap, config.seed, difference_bounds(job.task.bounds))
    return Row(spec.id, spec.kind, spec.layer, spec.params, float(result.scores.mean()), float(diffs.mean()), ci, n,
               result.stopped_early, spec.recalibrate, spec.depth, kept).to_dict()  # fmt: skip


def _job_inputs(job: SweepJob) -> tuple[nn.Module, nn.Module, ImageSet, ImageSet | None]:
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


def replacement_sweep(
    source: nn.Module,
    target: nn.Module,
    val: ImageSet,
    calibration: ImageSet | None = None,
    config: SweepConfig = SweepConfig(),
    task: Task = CLASSIFICATION,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    log_path: str | Path | None = None,
    executor: Executor = LOCAL,
    inputs: SweepInputs | None = None,
) -> Sweep:
    """Run every replacement row of S (already aligned to T when independent) into T.

    Args:
        val: evaluation data (the target's validation set).
        calibration: target training images for BN re-estimation (needed by recalibrated rows).
        log_path: a JSON-lines file of finished rows; a sweep that finds one resumes from it.
        executor: runs chunks of rows; a remote one needs ``inputs`` and ``log_path`` (its
            workers load T and the data themselves, and S from a file written next to the log).
    """
    start = time.perf_counter()
    whole, log, s_state, t_digest = _opened(source, target, val, calibration, config, task, device, log_path)
    specs, config = whole.rows, whole.config
    todo = [s for s in specs if s.id not in log.done]
    local = dataclasses.replace(whole, rows=tuple(todo))
    if todo and executor.remote:
        jobs = _remote_jobs(local, s_state, t_digest, executor, inputs, log_path)
    else:  # in-process, one chunk: the cached engine shares its frontiers across all rows
        executor, jobs = LOCAL, [("rows", local)]
    header, done, s_file = None, 0, jobs[0][1].source if executor.remote else None
    with closing(executor.map_unordered(sweep_rows, jobs)) as chunks:  # closed early: no job keeps running
        for _key, items in chunks:
            items = iter(items)
            first = next(items)  # every chunk starts with T's baseline; all chunks agree on it
            header = header or first
            for row in items:
                log.add(row)
                done += 1
                if progress is not None:
                    progress(ProgressEvent("replace", done, len(todo), {"row": f"{row['layer']} {row['params']}"}))
    rows = tuple(_row(log.done[s.id]) for s in specs)
    sweep = Sweep(
        task.metric_name, header["baseline"], rows, config, header["mode"], header["fallback"],
        time.perf_counter() - start, len(val), len(specs) - len(todo),
    )  # fmt: skip
    log.close()
    remove_file(s_file)
    return sweep


def _opened(source: nn.Module, target: nn.Module, val: ImageSet, calibration: ImageSet | None, config: SweepConfig,
            task: Task, device, log_path) -> tuple[SweepJob, JsonlLog, dict[str, torch.Tensor], str]:  # fmt: skip
    """How every sweep starts: the job of all its rows (the task's tolerance filled in, S and T on the
    device in eval mode), its rows log (keyed by S and T by content, the evaluation set's size and
    the config), S's values and T's digest."""
    if config.tolerance is None:
        config = dataclasses.replace(config, tolerance=task.tolerance)
    source, target = source.to(device).eval(), target.to(device).eval()
    specs = tuple(row_specs(sweep_units(source, target), config))
    s_state = {k: v.detach() for k, v in source.state_dict().items()}
    t_digest = state_digest(target.state_dict())
    key = fingerprint({"s": state_digest(s_state), "t": t_digest, "n": len(val), "config": config.to_dict()})
    job = SweepJob(source, target, val, calibration, specs, config, task, device)
    return job, JsonlLog(log_path, key), s_state, t_digest


class SweepStream:
    """A local sweep read row by row in spec order, each row evaluated only when it is reached.

    For a caller that may stop early: the plan's cross-fitted curve ends at the first depth
    that is not decisively within the tolerance, and the rows past it are never evaluated.
    Rows are logged as they finish, in the same log as :func:`replacement_sweep`'s, so a
    killed stream resumes. Rows run one at a time, so the cached engine shares no frontiers
    between them; a sweep read to its end is cheaper with :func:`replacement_sweep`.
    """

    def __init__(self, source: nn.Module, target: nn.Module, val: ImageSet, calibration: ImageSet | None = None,
                 config: SweepConfig = SweepConfig(), task: Task = CLASSIFICATION, device: torch.device | str = "cpu",
                 progress: Progress | None = None, log_path: str | Path | None = None):  # fmt: skip
        self._start = time.perf_counter()
        self._job, self._log, _, _ = _opened(source, target, val, calibration, config, task, device, log_path)
        self.specs = self._job.rows
        self._progress = progress
        self._evaluator: tuple[Evaluator, dict] | None = None
        self.rows: list[Row] = []
        self._resumed = 0

    def __iter__(self) -> Iterator[Row]:
        for spec in self.specs[len(self.rows) :]:
            record = self._log.done.get(spec.id)
            if record is None:
                evaluator, s_state = self._ready()
                ((_, result),) = evaluator.evaluate_all([_variant(spec, s_state)], _stop_rule(self._job.config))
                record = _record(spec, result, evaluator.baseline, self._job)
                self._log.add(record)
            else:
                self._resumed += 1
            self.rows.append(_row(record))
            if self._progress is not None:
                row = {"row": f"{spec.layer} {spec.params}"}
                self._progress(ProgressEvent("replace", len(self.rows), len(self.specs), row))
            yield self.rows[-1]

    def _ready(self) -> tuple[Evaluator, dict]:
        if self._evaluator is None:
            self._evaluator = _evaluator(self._job)
        return self._evaluator

    def sweep(self) -> Sweep:
        """The rows read so far, as a sweep; its rows log is removed."""
        header = _header(self._ready()[0])
        self._log.close()
        job = self._job
        return Sweep(job.task.metric_name, header["baseline"], tuple(self.rows), job.config, header["mode"],
                     header["fallback"], time.perf_counter() - self._start, len(job.val), self._resumed)  # fmt: skip


def _remote_jobs(local: SweepJob, s_state: dict, t_digest: str, executor: Executor, inputs: SweepInputs | None,
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


def _row(record: dict) -> Row:
    """A row read back from the rows log (JSON lists back to tuples)."""
    diffs = record.get("diffs")
    return Row(**(record | {"ci": tuple(record["ci"]), "diffs": tuple(diffs) if diffs is not None else None}))


def _first(data: ImageSet, n: int) -> ImageSet:
    return data if len(data) <= n else data.subset(torch.arange(n))

