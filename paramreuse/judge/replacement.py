"""Replacement sweeps (J1, J2): put S's values into T and measure the drop of T's metric.

Rows: every unit x parameter group (and the whole unit); cumulative units 1..k; all conv
kernels at once (J1), with T's batch norm kept and with its statistics re-estimated on target
training data. Each row carries its value, drop from T's baseline, and a 95% bootstrap CI of
the drop over evaluation samples (paired: the same samples for T and the variant).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import torch
from torch import nn

from paramreuse.backends import LOCAL, Executor, remove_file
from paramreuse.data import ImageSet
from paramreuse.judge.evidence import output_scores, sweep_score
from paramreuse.judge.replacement_engine import Evaluated, Evaluator, StopRule, Variant
from paramreuse.judge.replacement_jobs import SweepInputs, SweepJob, chunk_rows, image_digest, job_inputs, remote_jobs
from paramreuse.judge.replacement_rows import CONV_KINDS, PARAM_GROUPS, Row, RowSpec, Sweep, SweepConfig
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.state_dicts import state_digest
from paramreuse.models.units import Unit, pair_units
from paramreuse.progress import Progress, ProgressEvent
from paramreuse.results import JsonlLog, fingerprint
from paramreuse.stats import difference_bounds, mean_ci
from paramreuse.tasks import CLASSIFICATION, Task
from paramreuse.training.loop import batch_bounds

# The sweep's public names, wherever they are defined.
__all__ = ["PARAM_GROUPS", "Row", "Sweep", "SweepConfig", "SweepInputs", "SweepStream", "chunk_rows", "image_digest",
           "replacement_sweep", "row_specs", "sweep_units"]  # fmt: skip


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
    return [(x[a:b].to(device), y[a:b].to(device)) for a, b in batch_bounds(len(y), size)]


def sweep_rows(job: SweepJob) -> Iterator[dict]:
    """Evaluate one chunk of rows; yields a header (T's baseline, the engine mode), then each row as a dict."""
    evaluator, s_state = _evaluator(job)
    yield _header(evaluator)
    variants = [_variant(spec, s_state) for spec in job.rows]
    for i, result in evaluator.evaluate_all(variants, _stop_rule(job.config)):
        yield _record(job.rows[i], result, evaluator.baseline, job)


def _evaluator(job: SweepJob) -> tuple[Evaluator, dict[str, torch.Tensor]]:
    """T's evaluator on the job's images (T's baseline scored), and S's values."""
    source, target, val, calibration = job_inputs(job)
    config, device = job.config, job.device
    source, target = source.to(device).eval(), target.to(device).eval()
    s_state = {k: v.detach() for k, v in source.state_dict().items()}
    calib = [] if calibration is None else [b for b, _ in _batches(_first(calibration, config.max_calibration), config.batch_size, config.seed, device)]
    batches = _batches(val, config.batch_size, config.seed, device, job.task)
    score = functools.partial(output_scores, job.task, score=sweep_score(job.task, config.score))
    return Evaluator(target, batches, score, calib, cached=config.cached), s_state


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


def replacement_sweep(
    source: nn.Module,
    target: nn.Module,
    val: ImageSet,
    calibration: ImageSet | None = None,
    config: SweepConfig = SweepConfig(),
    *,
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
        jobs = remote_jobs(local, s_state, t_digest, executor, inputs, log_path)
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
        config.metric(task), header["baseline"], rows, config, header["mode"], header["fallback"],
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
                 config: SweepConfig = SweepConfig(), *, task: Task = CLASSIFICATION, device: torch.device | str = "cpu",
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
        return Sweep(job.config.metric(job.task), header["baseline"], tuple(self.rows), job.config, header["mode"],
                     header["fallback"], time.perf_counter() - self._start, len(job.val), self._resumed)  # fmt: skip


def _row(record: dict) -> Row:
    """A row read back from the rows log (JSON lists back to tuples)."""
    diffs = record.get("diffs")
    return Row(**(record | {"ci": tuple(record["ci"]), "diffs": tuple(diffs) if diffs is not None else None}))


def _first(data: ImageSet, n: int) -> ImageSet:
    return data if len(data) <= n else data.subset(torch.arange(n))

