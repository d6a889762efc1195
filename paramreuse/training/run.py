"""One training run: build or initialise a model, train it, evaluate it, save it, resume it.

Shared by ``paramreuse train`` and every training stage of a study. A run folder holds
``model.safetensors`` (architecture and task inside) and ``train.json``; a run whose
``train.json`` carries the same fingerprint is loaded instead of retrained.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from paramreuse.data import TaskData
from paramreuse.errors import CheckpointError, SpecError
from paramreuse.models import (
    Fit,
    ModelInfo,
    architecture_of,
    build_model,
    fit_state,
    is_pretrained,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from paramreuse.models.loading import check_takes, fit_to, load_source, rebuilt_for
from paramreuse.models.state_dicts import state_digest
from paramreuse.progress import Progress
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.tasks import task_key
from paramreuse.training.loop import TrainConfig, evaluate_metrics, train
from paramreuse.version import __version__

MODEL_FILE = "model.safetensors"
FRESH_INIT_OFFSET = 10_000  # seeds fresh parameters apart from S's initialisation (S used the study seed)
TRAIN_FILE = "train.json"


def environment(device: torch.device | str) -> dict:
    """Versions and device, recorded in every run folder."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "paramreuse": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
    }


def init_from_checkpoint(model: nn.Module, path: str | Path, keep_head: bool = False, *, arch: str | None = None) -> Fit:
    """Copy every tensor of ``path`` (a checkpoint, a plain state dict of ``arch``, or a pretrained
    spec) into ``model`` of architecture ``arch``; the head stays fresh unless ``keep_head`` and it fits.

    Returns:
        The heads made fresh and the input layers adapted (pretrained weights only).
    """
    source, info = load_source(path, arch)
    return fit_state(source.state_dict(), model, arch or info.arch, where=f"--init {path}", keep_head=keep_head,
                     adapt_input=is_pretrained(info))  # fmt: skip


def fit_source(path: str | Path, data: TaskData, seed: int = 0, *, arch: str | None = None) -> tuple[nn.Module, Fit]:
    """S rebuilt for the target's channels and classes: every tensor from ``path``, a fresh head
    (the head is never reused), so that S pairs with T unit by unit; and what was changed."""
    source, info = load_source(path, arch)
    return fit_to(source, info, channels=data.channels, num_outputs=data.num_outputs, seed=seed, where=f"source {path}")


def source_for_target(path: str | Path, data: TaskData, seed: int = 0, *, arch: str | None = None) -> nn.Module:
    """S rebuilt for the target (see :func:`fit_source`)."""
    return fit_source(path, data, seed, arch=arch)[0]


def check_outputs(model: nn.Module, data: TaskData, arch: str) -> None:
    """Run two training images through ``model`` and check its outputs fit the task, before any training."""
    example = data.train.x[:2]
    per_pixel = () if data.kind.name == "classification" else data.size  # masks and images have the images' size
    expected = (len(example), data.num_outputs, *per_pixel)
    fix = "resize the images: size = 32 in the study's [source] and [target] tables, or --size 32"
    shape = tuple(check_takes(model, example, what=arch, fix=fix, noun="images"))
    if shape != expected:
        hint = ("use a segmentation architecture such as builtin:unet or smp:Unet/resnet18"
                if data.kind.name != "classification" else "use a classification architecture such as builtin:cnn")  # fmt: skip
        raise SpecError(f"{arch} gives outputs of shape {shape} but {data.kind.name} on {data.name} needs {expected}; {hint}")


def model_info(arch: str, data: TaskData, extra: dict | None = None) -> ModelInfo:
    """What a checkpoint of a model of ``arch`` trained on ``data`` records: the architecture only
    (pretrained weights are in the tensors now), the data's channels, outputs, task, size and classes."""
    return ModelInfo(arch=architecture_of(arch), in_channels=data.channels, num_classes=data.num_outputs,
                     task=task_key(data.kind), input_size=data.size, data=data.name, classes=data.classes,
                     class_names=data.train.class_names, extra=dict(extra or {}))  # fmt: skip


@dataclass(frozen=True)
class RunSpec:
    """Everything that determines a training run (its fingerprint is a hash of this)."""

    arch: str
    config: TrainConfig
    seed: int = 0
    init: str | None = None
    keep_head: bool = False
    init_seed: int | None = None  # seeds the fresh parameters; default: ``seed``

    def key(self, data: TaskData, upstream: str = "") -> str:
        """What the run's result depends on: the initial checkpoint and the training images by content, never
        by path (a moved run folder resumes; another draw of the shots trains again)."""
        init = None if self.init is None else _content_digest(self.init)
        images = state_digest({"x": data.train.x, "y": data.train.y})
        return fingerprint(
            {"arch": self.arch, "config": self.config.to_dict(), "seed": self.seed, "init": init,
             "keep_head": self.keep_head, "init_seed": self.init_seed, "data": data.describe(), "upstream": upstream,
             "images": images}
        )  # fmt: skip


def _content_digest(source: str) -> str:
    """The tensors of a checkpoint file, hashed; a pretrained spec or missing file stands for itself."""
    path = Path(source)
    return state_digest(read_state_dict(path)) if path.is_file() else source


def run_training(
    spec: RunSpec,
    data: TaskData,
    out: str | Path,
    device: torch.device | str = "cpu",
    *,
    progress: Progress | None = None,
    stage: str = "train",
    upstream: str = "",
) -> tuple[nn.Module, dict]:
    """Train (or resume) one model; returns the model and the content of ``train.json``."""
    out = prepare_out_dir(out)
    key = spec.key(data, upstream)
    done = load_if_current(out / TRAIN_FILE, key)
    if done is not None and (out / MODEL_FILE).is_file():
        model, _ = load_checkpoint(out / MODEL_FILE, trust_code=True)  # the fingerprint says: spec.arch built it
        return model, done | {"resumed": True}
    torch.manual_seed(spec.seed if spec.init_seed is None else spec.init_seed)
    model = build_model(spec.arch, data.channels, data.num_outputs)
    check_outputs(model, data, spec.arch)
    if spec.init:
        init_from_checkpoint(model, spec.init, spec.keep_head, arch=spec.arch)
    result = train(model, data.train, spec.config, seed=spec.seed, val=data.val, task=data.kind, device=device,
                   progress=progress, stage=stage)
    model.cpu()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{stage}: training diverged (NaN weights); lower the learning rate")
    test_metrics = evaluate_metrics(model, data.test, data.kind, device)
    test_metric = test_metrics[data.kind.metric_name]
    save_checkpoint(out / MODEL_FILE, model, model_info(spec.arch, data))
    record = {
        "fingerprint": key,
        "stage": stage,
        "arch": spec.arch,
        "init": spec.init,
        "seed": spec.seed,
        "data": data.describe(),
        "config": spec.config.to_dict(),
        "metric": data.kind.metric_name,
        "units": data.kind.units,
        "val_metric": result.val_metric,
        "test_metric": test_metric,
        "test_metrics": test_metrics,
        "training": result.to_dict(),
        "environment": environment(device),
        "model": str(out / MODEL_FILE),
    }
    write_json(out / TRAIN_FILE, record)
    return model, record | {"resumed": False}


def adopt_source(checkpoint: str, arch: str | None, target: TaskData, out: str | Path, *, seed: int = 0) -> tuple[nn.Module, dict]:
    """S from the user's checkpoint or pretrained spec, fitted to the target's image channels and
    written to ``out`` as a paramreuse checkpoint, so that every later stage reads it like a trained S.

    A plain state dict needs ``arch`` (None: the architecture the checkpoint records); a pretrained
    spec's input layer is adapted as timm does. An ``arch`` other than the recorded one is an error.
    """
    loaded, info = load_source(checkpoint, arch, input_size=target.size)
    key = fingerprint({"given": state_digest(loaded.state_dict()), "arch": info.arch, "channels": target.channels})
    out = prepare_out_dir(out)
    done = load_if_current(out / TRAIN_FILE, key)
    if done is not None and (out / MODEL_FILE).is_file():
        return load_checkpoint(out / MODEL_FILE, info.arch)[0], done | {"resumed": True}
    model, fit = rebuilt_for(loaded.state_dict(), info.arch, channels=target.channels, num_outputs=info.num_classes,
                             seed=seed, where=f"--source {checkpoint}", keep_head=True,
                             adapt_input=is_pretrained(info))  # fmt: skip
    fitted = replace(info, in_channels=target.channels, input_size=target.size, task=task_key(target.kind))
    save_checkpoint(out / MODEL_FILE, model, fitted)
    record = {"fingerprint": key, "stage": "source", "arch": info.arch, "given": str(checkpoint),
              "given_model": info.describe(), "notes": fit.notes("S"), "metric": target.kind.metric_name,
              "test_metric": None, "test_metrics": {}, "val_metric": None, "training": {"seconds": 0.0}}  # fmt: skip
    write_json(out / TRAIN_FILE, record)
    return model.eval(), record | {"resumed": False}
