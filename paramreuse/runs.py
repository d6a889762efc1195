"""One training run: build or initialise a model, train it, evaluate it, save it, resume it.

Shared by ``paramreuse train`` and every training stage of a study. A run folder holds
``model.safetensors`` (architecture and task inside) and ``train.json``; a run whose
``train.json`` carries the same fingerprint is loaded instead of retrained.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from paramreuse.data import TaskData
from paramreuse.errors import CheckpointError
from paramreuse.models import (
    ModelInfo,
    build_model,
    head_names,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from paramreuse.models.checkpoint import infer_io
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.tasks import CLASSIFICATION
from paramreuse.train import Progress, TrainConfig, evaluate, train

MODEL_FILE = "model.safetensors"
TRAIN_FILE = "train.json"


def environment(device: torch.device | str) -> dict:
    """Versions and device, recorded in every run folder."""
    from paramreuse import __version__

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


def init_from_checkpoint(model: nn.Module, path: str | Path, keep_head: bool = False) -> None:
    """Copy every tensor of checkpoint ``path`` into ``model``; the head stays fresh unless ``keep_head``."""
    source, info = load_checkpoint(path)
    channels = infer_io(model.state_dict())[0]
    if info.in_channels != channels:
        raise CheckpointError(
            f"--init {path} takes {info.in_channels}-channel images but the data has {channels} channels; "
            f"use a checkpoint trained on {channels}-channel images"
        )
    state = source.state_dict()
    if not keep_head:
        own = model.state_dict()
        for key in head_names(source):
            state.pop(key, None)
        for key in head_names(model):
            state[key] = own[key]
    load_state_dict_checked(model, state, f"--init {path}")


def source_for_target(path: str | Path, data: TaskData, seed: int = 0) -> nn.Module:
    """S rebuilt for the target's classes: every tensor from the checkpoint, a fresh head (the
    head is never reused), so that S pairs with T unit by unit."""
    _, info = load_checkpoint(path)
    torch.manual_seed(seed)
    model = build_model(info.arch, data.channels, data.num_classes)
    init_from_checkpoint(model, path)
    return model.eval()


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
        return fingerprint(
            {"arch": self.arch, "config": self.config.to_dict(), "seed": self.seed, "init": self.init,
             "keep_head": self.keep_head, "init_seed": self.init_seed, "data": data.describe(), "upstream": upstream}
        )  # fmt: skip


def run_training(
    spec: RunSpec,
    data: TaskData,
    out: str | Path,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    stage: str = "train",
    upstream: str = "",
) -> tuple[nn.Module, dict]:
    """Train (or resume) one model; returns the model and the content of ``train.json``."""
    out = prepare_out_dir(out)
    key = spec.key(data, upstream)
    done = load_if_current(out / TRAIN_FILE, key)
    if done is not None and (out / MODEL_FILE).is_file():
        model, _ = load_checkpoint(out / MODEL_FILE)
        return model, done | {"resumed": True}
    torch.manual_seed(spec.seed if spec.init_seed is None else spec.init_seed)
    model = build_model(spec.arch, data.channels, data.num_classes)
    if spec.init:
        init_from_checkpoint(model, spec.init, spec.keep_head)
    result = train(model, data.train, spec.config, spec.seed, data.val, CLASSIFICATION, device, progress, stage)
    model.cpu()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{stage}: training diverged (NaN weights); lower the learning rate")
    test_metric = evaluate(model, data.test, CLASSIFICATION, device)
    info = ModelInfo(
        arch=spec.arch, in_channels=data.channels, num_classes=data.num_classes, task=CLASSIFICATION.name,
        input_size=data.size, data=data.name, classes=data.classes,
    )  # fmt: skip
    save_checkpoint(out / MODEL_FILE, model, info)
    record = {
        "fingerprint": key,
        "stage": stage,
        "arch": spec.arch,
        "init": spec.init,
        "seed": spec.seed,
        "data": data.describe(),
        "config": spec.config.to_dict(),
        "metric": CLASSIFICATION.metric_name,
        "val_metric": result.val_metric,
        "test_metric": test_metric,
        "training": result.to_dict(),
        "environment": environment(device),
        "model": str(out / MODEL_FILE),
    }
    write_json(out / TRAIN_FILE, record)
    return model, record | {"resumed": False}
