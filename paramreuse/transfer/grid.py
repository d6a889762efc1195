"""Run transfer strategies over shots and seeds on the same target samples, with statistics.

Every (shots, seed) pair draws its own target shots; all strategies of a pair train on exactly
those images with the one training loop, so comparisons are paired. Finished runs are
appended to ``transfer.runs.jsonl`` and a rerun resumes from it.

What the grid is asked (strategies, shots, seeds, the labelled budget) is
:class:`~paramreuse.transfer.config.TransferConfig`; one run of it is :mod:`paramreuse.transfer.runs`.
"""

from __future__ import annotations

from contextlib import closing
from itertools import chain

from paramreuse.backends import DataSpec, RunContext, remove_file, shippable_file
from paramreuse.data import task_for
from paramreuse.data.sampling import DRAW
from paramreuse.models.state_dicts import state_digest
from paramreuse.progress import ProgressEvent
from paramreuse.results import JsonlLog, fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.training.loop import length_note
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.runs import TransferJob, transfer_job
from paramreuse.transfer.summary import summarise

TRANSFER_FILE, RUNS_LOG = "transfer.json", "transfer.runs.jsonl"
MODELS_DIR = "models"  # kept models: models/<strategy>.safetensors (first seed, headline shots)
MODEL_ONLY = "model:"  # a finished run trained again only because its kept model is missing
TRANSFER_SOURCE_FILE = "transfer.source.safetensors"  # S's tensors, for the workers of a remote executor


def run_transfer(
    source: Source,
    plan: dict[str, str] | None,
    data: str,
    classes: str | tuple | None,
    run: RunContext,
    *,
    config: TransferConfig = TransferConfig(),
    data_dir: str | None = None,
    headline: int | None = None,
    task: str | None = None,
    size: int | tuple[int, int] | None = None,
    keep: tuple[str, ...] = ("plan",),
    channels: int | None = None,
) -> dict:
    """Every strategy x shots x seed; writes and returns ``transfer.json``.

    ``task``, ``size`` and ``channels`` are passed to :func:`paramreuse.data.load_task` (default: the data's own
    task, size and channels).
    ``run``: where to write (``run.out``), the device, progress callback and executor; each training
    run is a job for ``run.executor``, whose remote workers read S from a file in ``run.out``.
    ``keep``: strategies whose model of the first seed at the headline shots is saved, by the worker
    that trains it, to ``models/<strategy>.safetensors`` (listed in ``transfer.json["model_files"]``); a
    resumed grid trains again only the runs whose kept model is missing.
    """
    out, progress, executor = prepare_out_dir(run.out), run.progress, run.executor
    headline = headline if headline in config.shots else config.shots[0]
    digest = state_digest(source.state)
    conversion = {} if channels is None else {"channels": channels}  # unset: the keys of older run folders hold
    runs_key = fingerprint({"source": [source.arch, digest], "plan": plan, "draw": DRAW,
                            "data": [data, classes, task, size, *conversion.values()], "config": config.to_dict()})  # fmt: skip
    key = fingerprint([runs_key, headline])  # the headline only changes the summary, not the runs
    kept = {f"{headline}:0:{name}": model_file(name) for name in config.strategies if name in keep}
    missing = {job_id for job_id, file in kept.items() if not (out / file).is_file()}
    finished = load_if_current(out / TRANSFER_FILE, key)
    log = JsonlLog(out / RUNS_LOG if finished is None else None, runs_key)  # a finished grid's log is gone
    grid = [(n, s, name) for n in config.shots for s in range(config.seeds) for name in config.strategies]
    runs = {f"{n}:{s}:{name}": (n, s, name) for n, s, name in grid}
    todo = [job_id for job_id in runs if job_id not in log.done] if finished is None else []
    again = [job_id for job_id in runs if job_id in missing and job_id not in todo]  # for the model alone
    if executor.remote:  # the longest jobs first, so that no worker ends the grid alone with one
        todo.sort(key=lambda job_id: runs[job_id][2] != "best-depth")
    state = shippable_file(out / TRANSFER_SOURCE_FILE, source.state) if (todo or again) and executor.remote else source.state
    sorted_digest = state_digest(dict(sorted(source.state.items()))) if executor.remote else ""
    device = executor.job_device(run.device)
    # Every shots value is checked before any run starts (enough images per class); a document to write needs one.
    checked = sorted({runs[job_id][0] for job_id in todo + again})
    for n in checked or (config.shots[:1] if finished is None else []):
        loaded = DataSpec.of(data, classes=classes, shots=n, seed=0, data_dir=data_dir, task=task, size=size,
                             test_per_class=config.test_per_class, **config.data_options(), **conversion).load()  # fmt: skip
    jobs = []
    for job_id in todo + again:
        n, s, name = runs[job_id]
        target = DataSpec.of(data, classes=classes, shots=n, seed=s, data_dir=data_dir,
                             test_per_class=config.test_per_class, task=task, size=size, **config.data_options(),
                             **conversion)  # fmt: skip
        path = str(out / kept[job_id]) if job_id in kept else None
        job = TransferJob(source.arch, state, plan, target, name, s, config, device, sorted_digest, path)
        jobs.append((job_id if job_id in todo else MODEL_ONLY + job_id, job))
    resumed = [(job_id, None) for job_id in runs if job_id in log.done]  # counted, not recomputed
    total = len(resumed) + len(jobs)
    with closing(executor.map_unordered(transfer_job, jobs)) as results:  # closed early: no job keeps running
        for done, (job_id, result) in enumerate(chain(resumed, results), start=1):
            n, s, name = runs[job_id.removeprefix(MODEL_ONLY)]
            if result is not None and not job_id.startswith(MODEL_ONLY):
                log.add({"id": job_id, "strategy": name, "shots": n, "seed": s} | result)
            if progress is not None:
                progress(ProgressEvent("transfer", done, total, {"run": f"{name} {n} shots seed {s}"}))
    models = {runs[job_id][2]: file for job_id, file in kept.items()}
    if finished is not None:
        remove_file(out / TRANSFER_SOURCE_FILE)
        if finished.get("model_files") != models:
            write_json(out / TRANSFER_FILE, finished | {"model_files": models})
        return finished | {"model_files": models}
    document = {
        "metric": task_for(data, task).metric_name,
        "data": data,
        "classes": classes,  # as asked for; the classes it chose, by number and by name:
        "class_ids": list(loaded.classes),
        "class_names": list(loaded.train.class_names),
        "shots": list(config.shots),
        "headline_shots": headline,
        "seeds": config.seeds,
        "plan": plan,
        "config": config.to_dict(),
        "ci": "95% Student-t interval over seeds, inside the metric's bounds; none below 3 seeds",
        "length": trained_length(log.done.values(), config),
        "fingerprint": key,
    } | summarise(log.done, config, headline, task_for(data, task).bounds) | {"model_files": models}
    write_json(out / TRANSFER_FILE, document)
    log.close()
    remove_file(out / TRANSFER_SOURCE_FILE)
    return document


def trained_length(runs, config: TransferConfig) -> dict:
    """Per shots value: the epochs and optimiser steps a run trained (config.training asked for
    ``epochs``), with the note when ``min_steps`` raised them (None where an older log lacks them)."""
    by_shots = {r["shots"]: r for r in runs if "epochs" in r}
    return {str(n): {"epochs": r["epochs"], "steps": r["steps"], "note": length_note(config.training, r["epochs"])}
            for n, r in sorted(by_shots.items())}  # fmt: skip


def model_file(strategy_name: str) -> str:
    """Where a kept model of ``strategy_name`` is written, relative to the transfer's folder."""
    return f"{MODELS_DIR}/{strategy_name}.safetensors"
