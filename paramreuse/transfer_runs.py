"""Run transfer strategies over shots and seeds on the same target samples, with statistics.

Every (shots, seed) pair draws its own target shots and validation carve; all strategies of a
pair train on exactly those images with the one training loop, so comparisons are paired.
Finished runs are appended to ``transfer.runs.jsonl`` and a rerun resumes from it.
"""

from __future__ import annotations

import statistics
from contextlib import closing
from dataclasses import asdict, dataclass, field, replace
from itertools import chain
from pathlib import Path

import torch

from paramreuse.data import TaskData, load_task, task_for
from paramreuse.errors import CheckpointError
from paramreuse.executor import LOCAL, DataSpec, Executor, remove_file, shippable_file
from paramreuse.models import build_model, read_state_dict
from paramreuse.results import JsonlLog, fingerprint, load_if_current, prepare_out_dir, state_digest, write_json
from paramreuse.stats import paired_test, t_interval
from paramreuse.train import Progress, ProgressEvent, TrainConfig, evaluate, train
from paramreuse.transfer import L2SP, STRATEGIES, strategy, transplant, unit_names

TRANSFER_FILE, RUNS_LOG = "transfer.json", "transfer.runs.jsonl"
SOURCE_FILE = "transfer.source.safetensors"  # S's tensors, for the workers of a remote executor
FEWSHOT = TrainConfig(epochs=1, batch_size=16, lr=1e-2, optimizer="sgd", min_steps=150)
INIT_OFFSET = 10_000  # fresh parameters never share S's initialisation (S used the study seed)
COMPARED = ("scratch", "finetune-all")


@dataclass(frozen=True)
class TransferConfig:
    """Which strategies, shots and seeds; how the target model is trained."""

    strategies: tuple[str, ...] = STRATEGIES
    shots: tuple[int, ...] = (5, 10, 20, 50)
    seeds: int = 5
    training: TrainConfig = field(default_factory=lambda: FEWSHOT)
    finetuned_scale: float = 0.1
    l2sp_alpha: float = 0.01
    l2sp_beta: float = 0.01
    test_per_class: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Source:
    """S's architecture and tensors, as a transfer needs them."""

    arch: str
    state: dict


@dataclass(frozen=True, eq=False)
class Prepared:
    """A target model with S transplanted, and how to train it."""

    model: torch.nn.Module
    training: TrainConfig
    penalty: L2SP | None
    copied: int


def prepare(
    source: Source, task: TaskData, name: str, plan: dict | None, seed: int, config: TransferConfig,
    depth: int | None = None,
) -> Prepared:  # fmt: skip
    """A fresh target model (seeded apart from S's initialisation) with S transplanted as ``name`` says."""
    torch.manual_seed(seed + INIT_OFFSET)
    model = build_model(source.arch, task.channels, task.num_outputs)
    chosen = strategy(name, model, plan, depth, config.finetuned_scale)
    report = transplant(source.state, model, chosen.decisions)
    penalty = None
    if chosen.l2sp:
        anchor = {k: v for k, v in model.named_parameters() if k in set(report.copied)}
        penalty = L2SP(anchor, config.l2sp_alpha, config.l2sp_beta)
    decay = 0.0 if chosen.l2sp else config.training.weight_decay  # L2-SP replaces plain weight decay
    training = replace(config.training, lr_scale=chosen.lr_scale, weight_decay=decay)
    return Prepared(model, training, penalty, len(report.copied))


def run_one(
    source: Source, task: TaskData, name: str, plan: dict | None, seed: int, config: TransferConfig,
    device, depth: int | None = None,
) -> dict:  # fmt: skip
    """Prepare, train on the shots, evaluate on the target test set."""
    p = prepare(source, task, name, plan, seed, config, depth)
    result = train(p.model, task.train, p.training, seed, task.val, task.kind, device, penalty=p.penalty)
    return {
        "value": evaluate(p.model, task.test, task.kind, device),
        "val": result.val_metric,
        "depth": depth,
        "copied": p.copied,
        "seconds": result.seconds,
    }


@dataclass(frozen=True, eq=False)
class TransferJob:
    """One run: a strategy trained on one (shots, seed) draw of the target data."""

    arch: str
    state: dict | str  # S's tensors, or a safetensors file of them (for workers)
    plan: dict | None
    data: DataSpec  # the target task with this run's shots and seed
    strategy: str
    seed: int
    config: TransferConfig
    device: str | torch.device
    digest: str = ""  # what S's tensors hash to, in key order (checked when read from the file)


def transfer_job(job: TransferJob) -> dict:
    """Load the target data (and S, when given as a file), train the strategy, evaluate it."""
    task_data = load_task(job.data.name, **job.data.options)
    source = Source(job.arch, job.state if isinstance(job.state, dict) else _read_source(job.state, job.digest))
    if job.strategy == "best-depth":
        return _best_depth(source, task_data, job.plan, job.seed, job.config, job.device)
    return run_one(source, task_data, job.strategy, job.plan, job.seed, job.config, job.device)


def _read_source(path: str, digest: str) -> dict:
    state = read_state_dict(path)
    if state_digest(dict(sorted(state.items()))) != digest:
        raise CheckpointError(
            f"a worker read other tensors for S from {path} than the driver wrote; is the --out folder shared by every worker?"
        )
    return state


def summarise(runs: dict[str, dict], config: TransferConfig, headline: int) -> dict:
    """Means, CIs and paired tests per strategy and shots; top-level keys describe ``headline`` shots."""
    by = {(r["strategy"], r["shots"], r["seed"]): r for r in runs.values()}
    seeds = list(range(config.seeds))
    strategies = {}
    for name in config.strategies:
        per_shots = {}
        for n in config.shots:
            values = [by[(name, n, s)]["value"] for s in seeds]
            per_shots[str(n)] = {"mean": statistics.fmean(values), "ci": t_interval(values), "runs": values}
            if name == "best-depth":
                per_shots[str(n)]["depths"] = [by[(name, n, s)]["depth"] for s in seeds]
        strategies[name] = per_shots[str(headline)] | {"by_shots": per_shots}
    significance = {}
    if "plan" in config.strategies:
        for other in (o for o in COMPARED if o in config.strategies):
            per_shots = {str(n): paired_test(strategies["plan"]["by_shots"][str(n)]["runs"], strategies[other]["by_shots"][str(n)]["runs"])
                         for n in config.shots}  # fmt: skip
            significance[f"plan_vs_{other}"] = per_shots[str(headline)] | {"by_shots": per_shots}
    return {"strategies": strategies, "significance": significance}


def run_transfer(
    source: Source,
    plan: dict[str, str] | None,
    data: str,
    classes: str | tuple | None,
    out: str | Path,
    config: TransferConfig = TransferConfig(),
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    data_dir: str | None = None,
    headline: int | None = None,
    task: str | None = None,
    size: int | tuple[int, int] | None = None,
    executor: Executor = LOCAL,
) -> dict:
    """Every strategy x shots x seed; writes and returns ``transfer.json``.

    ``task`` and ``size`` are passed to :func:`paramreuse.data.load_task` (default: the data's own task).
    Each run is a job for ``executor``; the workers of a remote one read S from a file in ``out``.
    """
    if "plan" in config.strategies and plan is None:
        raise ValueError("the plan strategy needs a plan; pass one or leave 'plan' out of the strategies")
    out = prepare_out_dir(out)
    digest = state_digest(source.state)
    runs_key = fingerprint({"source": [source.arch, digest], "plan": plan, "data": [data, classes, task, size], "config": config.to_dict()})
    key = fingerprint([runs_key, headline])  # the headline only changes the summary, not the runs
    finished = load_if_current(out / TRANSFER_FILE, key)
    if finished is not None:
        return finished
    log = JsonlLog(out / RUNS_LOG, runs_key)
    grid = [(n, s, name) for n in config.shots for s in range(config.seeds) for name in config.strategies]
    runs = {f"{n}:{s}:{name}": (n, s, name) for n, s, name in grid}
    todo = [job_id for job_id in runs if job_id not in log.done]
    if executor.remote:  # the longest jobs first, so that no worker ends the grid alone with one
        todo.sort(key=lambda job_id: runs[job_id][2] != "best-depth")
    state = shippable_file(out / SOURCE_FILE, source.state) if todo and executor.remote else source.state
    sorted_digest = state_digest(dict(sorted(source.state.items()))) if executor.remote else ""
    device = executor.job_device(device)
    jobs = []
    for job_id in todo:
        n, s, name = runs[job_id]
        target = DataSpec.of(data, classes=classes, shots=n, seed=s, data_dir=data_dir,
                             test_per_class=config.test_per_class, task=task, size=size)  # fmt: skip
        jobs.append((job_id, TransferJob(source.arch, state, plan, target, name, s, config, device, sorted_digest)))
    resumed = [(job_id, None) for job_id in runs if job_id in log.done]  # counted, not recomputed
    with closing(executor.map_unordered(transfer_job, jobs)) as results:  # closed early: no job keeps running
        for done, (job_id, result) in enumerate(chain(resumed, results), start=1):
            n, s, name = runs[job_id]
            if result is not None:
                log.add({"id": job_id, "strategy": name, "shots": n, "seed": s} | result)
            if progress is not None:
                progress(ProgressEvent("transfer", done, len(runs), {"run": f"{name} {n} shots seed {s}"}))
    headline = headline if headline in config.shots else config.shots[0]
    document = {
        "metric": task_for(data, task).metric_name,
        "data": data,
        "classes": classes,
        "shots": list(config.shots),
        "headline_shots": headline,
        "seeds": config.seeds,
        "plan": plan,
        "config": config.to_dict(),
        "ci": "95% Student-t interval over seeds",
        "fingerprint": key,
    } | summarise(log.done, config, headline)
    write_json(out / TRANSFER_FILE, document)
    log.close()
    remove_file(out / SOURCE_FILE)
    return document


def _best_depth(source: Source, task: TaskData, plan, seed: int, config: TransferConfig, device) -> dict:
    """Oracle: freeze units 1..k for every k, keep the k with the best validation metric.

    Only the chosen candidate is evaluated on the test set.
    """
    depths = range(len(unit_names(build_model(source.arch, task.channels, task.num_outputs))) + 1)
    candidates = []
    for k in depths:
        p = prepare(source, task, "best-depth", plan, seed, config, depth=k)
        result = train(p.model, task.train, p.training, seed, task.val, task.kind, device)
        candidates.append((result.val_metric, -k, k, p, result.seconds))
    val, _, depth, best, _ = max(candidates, key=lambda c: c[:2])
    return {
        "value": evaluate(best.model, task.test, task.kind, device),
        "val": val,
        "depth": depth,
        "copied": best.copied,
        "seconds": sum(c[4] for c in candidates),
        "candidates": [{"depth": c[2], "val": c[0]} for c in candidates],
    }

