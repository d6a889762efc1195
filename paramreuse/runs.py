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
from paramreuse.errors import CheckpointError, SpecError
from paramreuse.models import (
    ModelInfo,
    build_model,
    head_names,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)
from paramreuse.models.checkpoint import infer_io
from paramreuse.tasks import task_key
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, write_json
from paramreuse.train import Progress, TrainConfig, evaluate_all, train

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
    model = build_model(info.arch, data.channels, data.num_outputs)
    init_from_checkpoint(model, path)
    return model.eval()


def check_outputs(model: nn.Module, data: TaskData, arch: str) -> None:
    """Run two training images through ``model`` and check its outputs fit the task, before any training."""
    example = data.train.x[:2]
    per_pixel = () if data.kind.name == "classification" else data.size  # masks and images have the images' size
    expected = (len(example), data.num_outputs, *per_pixel)
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            shape = tuple(model.eval()(example).shape)
    except Exception as exc:  # noqa: BLE001 - any failure here means the input does not fit the architecture
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SpecError(
            f"{arch} cannot take {data.channels}x{data.size[0]}x{data.size[1]} images ({first}); "
            "resize the images: size = 32 in the study's [source] and [target] tables, or --size 32"
        ) from None
    finally:
        for m, mode in modes.items():
            m.train(mode)
    if shape != expected:
        hint = ("use a segmentation architecture such as builtin:unet or smp:Unet/resnet18"
                if data.kind.name != "classification" else "use a classification architecture such as builtin:cnn")  # fmt: skip
        raise SpecError(f"{arch} gives outputs of shape {shape} but {data.kind.name} on {data.name} needs {expected}; {hint}")


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
    model = build_model(spec.arch, data.channels, data.num_outputs)
    check_outputs(model, data, spec.arch)
    if spec.init:
        init_from_checkpoint(model, spec.init, spec.keep_head)
    result = train(model, data.train, spec.config, spec.seed, data.val, data.kind, device, progress, stage)
    model.cpu()
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise CheckpointError(f"{stage}: training diverged (NaN weights); lower the learning rate")
    test_metrics = evaluate_all(model, data.test, data.kind, device)
    test_metric = test_metrics[data.kind.metric_name]
    info = ModelInfo(
        arch=spec.arch, in_channels=data.channels, num_classes=data.num_outputs, task=task_key(data.kind),
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
