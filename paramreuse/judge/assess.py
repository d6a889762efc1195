"""Assess one (S, T) pair: compare kernels (J3), sweep replacements (J1, J2), judge, persist.

Each result file is written as soon as it exists: ``comparison.json``, ``replacement.json``
(the sweep resumes from ``replacement.rows.jsonl`` when interrupted) and ``plan.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paramreuse.backends import LOCAL, Executor
from paramreuse.data import TaskData
from paramreuse.judge.kernels import Comparison, compare_models
from paramreuse.judge.network import NetworkEvidence
from paramreuse.judge.plan import Plan, judge
from paramreuse.judge.replacement import Sweep, SweepConfig, SweepInputs, replacement_sweep
from paramreuse.judge.verdicts import Thresholds, parameter_type_findings
from paramreuse.models.heads import head_module_name
from paramreuse.progress import Progress
from paramreuse.results import json_safe, prepare_out_dir, write_json

COMPARISON_FILE, REPLACEMENT_FILE, PLAN_FILE = "comparison.json", "replacement.json", "plan.json"
ROWS_LOG = "replacement.rows.jsonl"
PROBE_SIZE = 256  # target images used for activation matching


@dataclass(frozen=True, eq=False)
class Assessment:
    comparison: Comparison
    sweep: Sweep | None
    plan: Plan | None
    sweep_document: dict | None = None  # replacement.json as written (the sweep, its findings and lineage)


def compare_pair(
    source: nn.Module, target: nn.Module, data: TaskData | None, out: Path, *, align: str = "auto",
    lineage: str | None = None, seed: int = 0, file: str = COMPARISON_FILE, key: str = "",
    example: torch.Tensor | None = None,
) -> Comparison:  # fmt: skip
    """J3 for one pair, written to ``out/file`` (with ``key`` as its fingerprint).

    ``example``: a batch S and T take, which gives alignment the input size when there are no ``data``.
    """
    # Unlabelled target images for activation matching: the validation set, or the shots when there is none.
    images = None if data is None else data.val if len(data.val) else data.train
    probe = images.x[:PROBE_SIZE] if images is not None else None
    comparison = compare_models(source, target, align=align, data=probe, lineage=lineage, seed=seed,
                                example_input=example)  # fmt: skip
    write_json(prepare_out_dir(out) / file, comparison.to_dict() | {"fingerprint": key})
    return comparison


def assess(
    source: nn.Module,
    target: nn.Module,
    data: TaskData,
    out: str | Path,
    *,
    align: str = "auto",
    lineage: str | None = None,
    sweep_config: SweepConfig = SweepConfig(),
    thresholds: Thresholds = Thresholds(),
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    with_plan: bool = True,
    key: str = "",
    executor: Executor = LOCAL,
    inputs: SweepInputs | None = None,
    sweep: Sweep | None = None,
    network: NetworkEvidence | None = None,
) -> Assessment:
    """Compare, sweep (S aligned to T when the pair is independent) and judge; persist each step.

    ``key`` is stored as the ``fingerprint`` of every file written, for callers that resume.
    ``executor`` runs the sweep's rows; a remote one needs ``inputs`` (see :class:`SweepInputs`).
    ``sweep``: evidence already measured (e.g. cross-fitted on the shots) instead of a sweep on ``data.val``.
    ``network``: the network decision's evidence when the sweep does not carry it (see :mod:`paramreuse.judge.network`).
    """
    out = prepare_out_dir(out)
    comparison = compare_pair(source, target, data, out, align=align, lineage=lineage, seed=sweep_config.seed, key=key)
    if sweep is None:
        sweep = replacement_sweep(
            comparison.aligned_source, target, data.val, data.train, sweep_config, task=data.kind, device=device,
            progress=progress, log_path=out / ROWS_LOG, executor=executor, inputs=inputs,
        )  # fmt: skip
    if network is not None:
        sweep = dataclasses.replace(sweep, extra=sweep.extra | {"network_evidence": network.to_dict()})
    findings = parameter_type_findings(sweep)
    extra = {"findings": findings, "lineage": comparison.lineage, "fingerprint": key}
    document = json_safe(sweep.to_dict() | extra)
    write_json(out / REPLACEMENT_FILE, document)
    if not with_plan:
        return Assessment(comparison, sweep, None, document)
    plan = judge(sweep, comparison, head_module_name(target), thresholds.for_task(data.kind))
    write_json(out / PLAN_FILE, plan.to_dict() | {"fingerprint": key})
    return Assessment(comparison, sweep, plan, document)
