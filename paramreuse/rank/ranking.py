"""Rank candidate source models (or the layers of one) for a target task, every score side by side.

Baselines (:mod:`paramreuse.rank.scores`) are computed on the target's labelled images that our own
signal also sees, the few-shot training set together with the validation set, so no predictor
gets more labels than another. Ours follows the study: T is S fine-tuned briefly on the target
shots (``StudyTraining().fewshot``) and ``assess`` compares and sweeps the pair on the
validation set. Its numbers: the J1 value (T's metric with all of S's conv kernels put back),
the reusable depth, the RMSE position (mean ``rmse / rmse_null`` over the units, 0 = T's own
values, 1 = no closer than a random initialisation) and, per layer, the metric of T with S's
units 1..k put back (batch-norm statistics re-estimated on the target shots by default).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from paramreuse.backends import Checkpoint, DataSpec, RunContext
from paramreuse.data import ImageSet, TaskData
from paramreuse.errors import DataError, ParamreuseError
from paramreuse.judge.assess import assess
from paramreuse.judge.replacement import SweepConfig, SweepInputs, image_digest
from paramreuse.judge.verdicts import Thresholds
from paramreuse.models.loading import fit_to, load_source
from paramreuse.models.units import inventory
from paramreuse.progress import Progress, ProgressEvent
from paramreuse.rank.features import Features, extract_features
from paramreuse.rank.scores import FEATURE_SCORES, SCORES, TransferabilityWarning
from paramreuse.results import prepare_out_dir
from paramreuse.training.loop import FEWSHOT  # the study's few-shot recipe makes T
from paramreuse.training.run import MODEL_FILE, TRAIN_FILE, RunSpec, run_training, source_for_target

RANK_FILE = "rank.json"
OURS_SOURCE = ("j1_value", "reusable_depth", "rmse_position")
OURS_LAYER = ("cumulative_value", "unit_value", "rmse_position")
LOWER_IS_BETTER = {"rmse_position"}


@dataclass(frozen=True)
class ScoreValue:
    """One score's value, the seconds it took, and a caveat when its estimate is unreliable."""

    value: float
    seconds: float
    note: str | None = None


def score(name: str, *args) -> ScoreValue:
    """Run the registered score ``name``, timing it and turning its warnings into a note."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TransferabilityWarning)
        value = SCORES[name].function(*args)
    notes = [str(w.message) for w in caught if issubclass(w.category, TransferabilityWarning)]
    for w in caught:  # other warnings (e.g. a solver's convergence) pass on unchanged
        if not issubclass(w.category, TransferabilityWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return ScoreValue(float(value), time.perf_counter() - start, "; ".join(notes) or None)


def score_features(features: np.ndarray, labels: np.ndarray, names: tuple[str, ...] = FEATURE_SCORES) -> dict:
    """Every feature-based score of one feature matrix."""
    return {name: score(name, features, labels) for name in names}


def score_source(features: Features, labels: np.ndarray) -> dict:
    """All baselines for one source model: feature scores on the penultimate layer, LEEP and NCE."""
    scores = score_features(features.penultimate, labels)
    scores["leep"] = score("leep", features.source_probs, labels)
    scores["nce"] = score("nce", features.source_labels, labels)
    return scores


def labelled_pool(data: TaskData) -> ImageSet:
    """The target images with labels that every predictor may use: training shots and validation."""
    return ImageSet(
        torch.cat([data.train.x, data.val.x]), torch.cat([data.train.y, data.val.y]), data.train.class_names
    )


@dataclass(frozen=True)
class Ours:
    """Our signal for one (S, target) pair, from T = S fine-tuned on the shots."""

    j1_value: float
    reusable_depth: int
    rmse_position: float
    baseline: float  # T's own validation metric
    layers: tuple[dict, ...]  # per swept unit: name, depth, cumulative_value, unit_value, rmse_position
    target_model: str
    finetune_seconds: float
    assess_seconds: float
    recalibrated_bn: bool = True

    @property
    def seconds(self) -> float:
        return self.finetune_seconds + self.assess_seconds


def file_digest(path: str | Path) -> str:
    """Hash of a checkpoint's bytes (of a pretrained spec's text): a T fine-tuned from other contents is never reused."""
    h = hashlib.sha256()
    if not Path(path).is_file():
        return hashlib.sha256(str(path).encode()).hexdigest()[:16]
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def our_signal(
    source: str | Path,
    data: TaskData,
    run: RunContext,
    *,
    seed: int = 0,
    sweep_params: tuple[str, ...] = ("unit",),
    thresholds: Thresholds = Thresholds(),
    recalibrate_bn: bool = True,
    data_spec: DataSpec | None = None,
    arch: str | None = None,
) -> Ours:
    """Fine-tune S into T on ``data.train`` (cached in ``run.out/target``), then assess (S, T) on ``data.val``.

    With ``recalibrate_bn`` (the default) every replacement row re-estimates the batch-norm
    statistics on the target shots: S's units keep their learned weights, and the shift of
    feature statistics between the domains, which otherwise dominates every drop, is taken out
    (bench/README.md, "Ranking layers", measures both variants).

    A remote ``run.executor`` runs the sweep's rows; its workers load T from ``out/target`` and the
    target from ``data_spec`` (which must describe ``data``). ``arch`` is the architecture of a
    plain state-dict ``source``.
    """
    out, device, progress = prepare_out_dir(run.out), run.device, run.progress
    _, info = load_source(source, arch)
    spec = RunSpec(info.arch, FEWSHOT, seed, init=str(source))
    t_model, record = run_training(spec, data, out / "target", device, progress=progress, stage="target",
                                   upstream=file_digest(source))
    s_model = source_for_target(source, data, seed, arch=arch)
    start = time.perf_counter()
    config = SweepConfig(
        params=sweep_params, recalibrate_bn=recalibrate_bn, seed=seed, tolerance=thresholds.layer_tolerance
    )
    t_file = Checkpoint(str(out / "target" / MODEL_FILE), info.arch)
    inputs = None if data_spec is None else SweepInputs(t_file, data_spec)
    result = assess(s_model, t_model.eval(), data, out, lineage="finetuned", sweep_config=config,
                    thresholds=thresholds, device=device, progress=progress, executor=run.executor, inputs=inputs)  # fmt: skip
    seconds = time.perf_counter() - start
    plan, sweep = result.plan, result.sweep
    positions = {d.name: d.null_position for d in result.comparison.layers}
    units = {r.layer: r.value for r in sweep.by_kind("unit") if r.params == "unit"}
    layers = tuple(
        {"name": r.layer, "depth": r.depth, "cumulative_value": r.value, "unit_value": units.get(r.layer),
         "rmse_position": positions.get(r.layer)}
        for r in sweep.by_kind("cumulative")
    )  # fmt: skip
    mean_position = float(np.nanmean([layer["rmse_position"] for layer in layers])) if layers else float("nan")
    return Ours(plan.network_value, plan.reusable_depth, mean_position, plan.baseline, layers,
                str(out / "target" / MODEL_FILE), record["training"]["seconds"], seconds, recalibrate_bn)  # fmt: skip


@dataclass(frozen=True)
class SourceRow:
    name: str
    path: str
    arch: str
    parameters: int
    source_metric: float | None
    scores: dict[str, ScoreValue]
    ours: Ours | None
    feature_seconds: float

    def values(self) -> dict[str, float]:
        """Every predictor's value, ours included, keyed by column name."""
        values = {k: v.value for k, v in self.scores.items()}
        if self.ours is not None:
            values |= {k: float(getattr(self.ours, k)) for k in OURS_SOURCE}
        return values


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    depth: int
    width: int
    scores: dict[str, ScoreValue]
    ours: dict | None

    def values(self) -> dict[str, float]:
        values = {k: v.value for k, v in self.scores.items()}
        if self.ours is not None:
            values |= {k: self.ours[k] for k in OURS_LAYER if self.ours.get(k) is not None}
        return values


@dataclass(frozen=True)
class Ranking:
    """Rows sorted by ``by`` (best first), with every column's rank (1 = best) alongside."""

    mode: str  # sources | layers
    target: dict
    scored_on: int
    by: str
    rows: tuple
    ranks: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"mode": self.mode, "target": self.target, "scored_on": self.scored_on, "by": self.by,
                "higher_is_better": {c: c not in LOWER_IS_BETTER for c in columns(self.rows)},
                "rows": [asdict(r) | {"values": r.values(), "ranks": self.ranks.get(r.name, {})} for r in self.rows]}  # fmt: skip


def columns(rows) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen |= dict.fromkeys(row.values())
    return list(seen)


def column_ranks(rows) -> dict[str, dict[str, int]]:
    """Row name -> column -> rank (1 = best; ties share the better rank)."""
    ranks: dict[str, dict[str, int]] = {r.name: {} for r in rows}
    for col in columns(rows):
        sign = 1.0 if col in LOWER_IS_BETTER else -1.0
        have = {r.name: sign * r.values()[col] for r in rows if np.isfinite(r.values().get(col, np.nan))}
        for name, value in have.items():
            ranks[name][col] = 1 + sum(v < value for v in have.values())
    return ranks


def sort_rows(rows: list, by: str) -> tuple:
    """Rows best first by column ``by``; rows without a finite value go last."""
    if rows and by not in columns(rows):
        raise ParamreuseError(f"cannot rank by {by!r}; choose one of {', '.join(columns(rows))}")
    sign = 1.0 if by in LOWER_IS_BETTER else -1.0

    def key(row) -> float:
        value = row.values().get(by, float("nan"))
        return sign * value if np.isfinite(value) else np.inf

    return tuple(sorted(rows, key=key))


def source_label(path: Path, taken: set[str]) -> str:
    """A short unique name: the run folder for ``model.safetensors``, else the file stem (a
    pretrained spec's text, made fit for a folder name)."""
    base = path.parent.name if path.name == MODEL_FILE and path.parent.name else path.stem
    if not path.is_file():
        base = "".join(c if c.isalnum() or c in "._" else "-" for c in str(path)).strip("-")
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    taken.add(name)
    return name


def _source_metric(path: Path) -> float | None:
    record = path.parent / TRAIN_FILE
    if path.name != MODEL_FILE or not record.is_file():
        return None
    try:
        return json.loads(record.read_text()).get("test_metric")
    except json.JSONDecodeError:
        return None


def source_on(path: str | Path, arch: str | None, data: TaskData):
    """A source with its own head, taking the target's images: a pretrained spec's input layer is
    adapted to their channels; a checkpoint for other channels is a one-line error."""
    model, info = load_source(path, arch)
    if info.in_channels != data.channels:
        model, _ = fit_to(model, info, channels=data.channels, num_outputs=info.num_classes, keep_head=True,
                          where=f"source {path}")  # fmt: skip
    return model, info


@dataclass(frozen=True, eq=False)
class SourceJob:
    """One candidate source to score: its checkpoint, and the target (in memory, or a spec workers load)."""

    name: str
    path: str
    data: TaskData | DataSpec
    out: str
    with_ours: bool
    seed: int
    device: str | torch.device
    progress: Progress | None = None  # in-process jobs only
    digest: str = ""  # what a worker's labelled target images must hash to
    arch: str | None = None  # of a plain state-dict source


def score_source_job(job: SourceJob) -> SourceRow:
    """Every baseline for one source, and ours (S fine-tuned into T in ``job.out``, then assessed)."""
    data = job.data.load() if isinstance(job.data, DataSpec) else job.data
    pool, path = labelled_pool(data), Path(job.path)
    if job.digest and image_digest(pool) != job.digest:
        raise DataError(f"a worker loaded other target images for {job.data.name!r} than the driver holds; "
                        "make the same data visible to every worker at the same path")  # fmt: skip
    model, info = source_on(path, job.arch, data)
    start = time.perf_counter()
    feats = extract_features(model, pool.x, device=job.device)
    feature_seconds = time.perf_counter() - start
    run = RunContext(Path(job.out), device=job.device, progress=job.progress)
    ours = our_signal(path, data, run, seed=job.seed, arch=job.arch) if job.with_ours else None
    params = sum(p.numel() for p in model.parameters())
    return SourceRow(job.name, str(path), info.arch, params, _source_metric(path),
                     score_source(feats, pool.y.numpy()), ours, feature_seconds)  # fmt: skip


def rank_sources(
    sources: list[str | Path],
    data: TaskData,
    run: RunContext,
    *,
    with_ours: bool = True,
    by: str | None = None,
    seed: int = 0,
    data_spec: DataSpec | None = None,
    arch: str | None = None,
) -> Ranking:
    """Score every source on the target and rank them (by ours' J1 value unless ``by``).

    Each source is a job for ``run.executor``; the workers of a remote one load the target from
    ``data_spec`` (which must describe ``data``) and write T into ``run.out``.
    """
    executor, progress = run.executor, run.progress
    if executor.remote and data_spec is None:
        raise ValueError("a remote executor needs data_spec: its workers load the target data themselves")
    out, taken, pool = prepare_out_dir(run.out), set(), labelled_pool(data)
    target, device = (data_spec, executor.job_device(run.device)) if executor.remote else (data, run.device)
    job_progress, digest = (None, image_digest(pool)) if executor.remote else (progress, "")
    jobs = []
    for path in map(Path, sources):
        name = source_label(path, taken)
        job = SourceJob(name, str(path), target, str(out / name), with_ours, seed, device, job_progress, digest, arch)
        jobs.append((name, job))
    scored = {}
    with closing(executor.map_unordered(score_source_job, jobs)) as results:  # closed early: no job keeps running
        for done, (name, row) in enumerate(results, start=1):
            scored[name] = row
            if progress is not None:
                progress(ProgressEvent("rank", done, len(jobs), {"source": name}))
    rows = [scored[name] for name, _ in jobs]
    by = by or ("j1_value" if with_ours else "logme")
    return Ranking("sources", data.describe(), len(pool), by, sort_rows(rows, by), column_ranks(rows))


def rank_layers(
    source: str | Path,
    data: TaskData,
    run: RunContext,
    *,
    with_ours: bool = True,
    by: str | None = None,
    seed: int = 0,
    data_spec: DataSpec | None = None,
    arch: str | None = None,
) -> Ranking:
    """Score every unit of one source (its pooled output on the target) and rank the depths 1..k.

    A remote ``run.executor`` runs the rows of our sweep (see :func:`our_signal`).
    """
    prepare_out_dir(run.out)
    pool = labelled_pool(data)
    model, _ = source_on(source, arch, data)
    feats = extract_features(model, pool.x, device=run.device)
    ours = our_signal(source, data, run, seed=seed, data_spec=data_spec, arch=arch) if with_ours else None
    by_name = {layer["name"]: layer for layer in ours.layers} if ours else {}
    kinds = {u.name: u.kind for u in inventory(model)}
    rows = [
        LayerRow(name, kinds.get(name, ""), depth, int(feats.per_layer[name].shape[1]),
                 score_features(feats.per_layer[name], pool.y.numpy()), by_name.get(name) if ours else None)
        for depth, name in enumerate(feats.layers, start=1)
    ]  # fmt: skip
    by = by or ("cumulative_value" if with_ours else "logme")
    return Ranking(
        "layers", data.describe() | {"source": str(source)}, len(pool), by, sort_rows(rows, by), column_ranks(rows)
    )
