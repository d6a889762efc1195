"""The one training loop: every stage (source, fine-tune, scratch, transfer) goes through it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from paramreuse.config import ConfigError, check_at_least, check_choice
from paramreuse.data import ImageSet, TaskData
from paramreuse.progress import Progress, ProgressEvent
from paramreuse.stats import mean_ci
from paramreuse.tasks import CLASSIFICATION, Task
from paramreuse.training import precision
from paramreuse.training.frozen import FrozenSplit, split_frozen

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    ``lr_scale`` maps a parameter-name prefix to a multiplier of ``lr``; 0 freezes those
    parameters (and keeps their batch-norm statistics fixed). The longest matching prefix wins.
    ``min_steps`` raises the epoch count for tiny (few-shot) training sets; ``steps``, when set,
    is the exact number of optimiser steps instead (``epochs`` and ``min_steps`` are then
    ignored, and the last epoch may stop part-way). ``auto_rgn``
    rescales every tensor's rate at the start of each epoch by its relative gradient norm
    |grad| / |theta|, normalised by the largest (Auto-RGN, Lee et al., ICLR 2023).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"
    schedule: str = "cosine"
    min_steps: int = 0
    lr_scale: tuple[tuple[str, float], ...] = ()
    auto_rgn: bool = False
    steps: int | None = None

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_at_least(self, ("epochs", "batch_size", "steps"), 1)
        check_at_least(self, ("min_steps",), 0)
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")

    def to_dict(self) -> dict:
        """The fields; ``steps`` only when set, so that runs fingerprinted before it existed still resume."""
        fields = asdict(self)
        return fields if self.steps is not None else {k: v for k, v in fields.items() if k != "steps"}


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: ``epochs`` and ``steps`` actually trained, ``asked`` the length its
    config asked for (``epochs``, ``steps``, ``min_steps``), and ``note`` when the floor raised it."""

    epochs: int
    steps: int
    seconds: float
    final_loss: float
    val_metric: float | None
    history: tuple[dict, ...]
    asked: dict = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def batch_bounds(n_images: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch over ``n_images``; a last batch of one image joins the one
    before it, since batch norm cannot train on a single value per channel (resnet18's last stage at 1x1).

    >>> batch_bounds(33, 16), batch_bounds(34, 16), batch_bounds(1, 16)
    ([(0, 16), (16, 33)], [(0, 16), (16, 32), (32, 34)], [(0, 1)])
    """
    starts = list(range(0, n_images, batch_size))
    if len(starts) > 1 and n_images - starts[-1] == 1:
        starts.pop()
    return [(a, b) for a, b in zip(starts, starts[1:] + [n_images])]


def training_length(config: TrainConfig, n_images: int) -> tuple[int, int]:
    """(epochs, optimiser steps) that ``config`` trains on ``n_images`` images.

    >>> training_length(TrainConfig(epochs=2, batch_size=10, min_steps=30), 50)
    (6, 30)
    >>> training_length(TrainConfig(epochs=2, batch_size=10, steps=12), 50)
    (3, 12)
    """
    steps_per_epoch = len(batch_bounds(n_images, config.batch_size))
    if config.steps is not None:
        return math.ceil(config.steps / steps_per_epoch), config.steps
    epochs = max(config.epochs, math.ceil(config.min_steps / steps_per_epoch))
    return epochs, epochs * steps_per_epoch


def with_length(config: TrainConfig, *, epochs: int | None = None, steps: int | None = None,
                min_steps: int | None = None) -> TrainConfig:  # fmt: skip
    """``config`` with the length a user asked for: exactly ``steps`` optimiser steps, or ``epochs``
    and ``min_steps`` (each only when given); unchanged when nothing is given.

    >>> with_length(TrainConfig(steps=40), epochs=3).steps is None, with_length(TrainConfig(steps=40), min_steps=9).steps
    (True, 40)
    """
    if steps is not None:
        return replace(config, steps=steps)
    given = {k: v for k, v in (("epochs", epochs), ("min_steps", min_steps)) if v is not None}
    if epochs is not None:  # epochs asked for: the config's own exact steps no longer hold
        given["steps"] = None
    return replace(config, **given) if given else config


def length_note(config: TrainConfig, epochs: int) -> str | None:
    """One line when ``min_steps`` raised the epochs ``config`` asked for to ``epochs``, else None.

    >>> length_note(TrainConfig(epochs=2, min_steps=300), 30)
    'trained 30 epochs (asked 2): --min-steps 300 raised it; pass --min-steps 0 to train exactly 2'
    >>> length_note(TrainConfig(epochs=2, min_steps=300), 2) is None
    True
    """
    if config.steps is not None or epochs <= config.epochs:
        return None
    return (f"trained {epochs} epochs (asked {config.epochs}): --min-steps {config.min_steps} raised it; "
            f"pass --min-steps 0 to train exactly {config.epochs}")  # fmt: skip


# The few-shot recipe (T, T_scratch and every transfer run): what a practitioner with a few shots would run.
FEWSHOT = TrainConfig(epochs=1, batch_size=16, lr=1e-2, optimizer="sgd", min_steps=150)


def _scale_for(name: str, lr_scale: tuple[tuple[str, float], ...]) -> float:
    matches = [(len(p), s) for p, s in lr_scale if name == p or name.startswith(p + ".") or p == ""]
    return max(matches)[1] if matches else 1.0


def param_groups(model: nn.Module, config: TrainConfig) -> tuple[list[dict], set[str]]:
    """Optimiser groups by learning-rate scale (one per tensor for Auto-RGN), and the names of frozen parameters."""
    groups: dict[float | str, list[nn.Parameter]] = {}
    frozen = set()
    for name, p in model.named_parameters():
        scale = _scale_for(name, config.lr_scale)
        if scale == 0:
            p.requires_grad_(False)
            frozen.add(name)
        else:
            p.requires_grad_(True)
            groups.setdefault(name if config.auto_rgn else scale, []).append(p)
    if config.auto_rgn:
        return [{"params": ps, "lr": config.lr, "base_lr": config.lr} for ps in groups.values()], frozen
    return [{"params": ps, "lr": config.lr * s} for s, ps in groups.items()], frozen


def relative_gradient_norms(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], task: Task, params: list[nn.Parameter]
) -> list[float]:
    """|grad| / |theta| of each of ``params`` over ``batches`` (normalisation statistics left untouched)."""
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        task.loss(model(x), y).backward()
    model.load_state_dict(buffers, strict=False)
    norms = []
    for p in params:
        grad = p.grad.norm().item() if p.grad is not None else 0.0
        size = p.detach().norm().item()
        norms.append(grad / size if size > 0 else math.inf)  # a zero tensor (a fresh bias) has no relative norm
    model.zero_grad(set_to_none=True)
    return norms


def _auto_rgn_rates(opt: torch.optim.Optimizer, norms: list[float], progress_fraction: float, schedule: str) -> None:
    """Each group's rate: its base rate x RGN / max RGN x the schedule's factor now.

    A tensor that is all zeros (infinite RGN) trains at the full rate and is left out of the maximum.
    """
    top = max((n for n in norms if math.isfinite(n)), default=0.0) or 1.0
    factor = 0.5 * (1 + math.cos(math.pi * progress_fraction)) if schedule == "cosine" else 1.0
    for group, norm in zip(opt.param_groups, norms):
        group["lr"] = group["base_lr"] * min(norm / top, 1.0) * factor


def frozen_norms(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """Normalisation layers whose parameters are all frozen: they are held in eval mode, so that
    their running statistics stay S's and normalise as S's did."""
    held = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            own = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(recurse=False)]
            if own and all(p in frozen for p in own):
                held.append(module)
    return held


def _hold_frozen_norms(model: nn.Module, frozen: set[str]) -> None:
    """Put normalisation layers whose parameters are all frozen into eval mode."""
    for module in frozen_norms(model, frozen):
        module.eval()


def _optimizer(groups: list[dict], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; use adam or sgd")


def train(
    model: nn.Module,
    data: ImageSet,
    config: TrainConfig,
    *,
    seed: int = 0,
    val: ImageSet | None = None,
    task: Task = CLASSIFICATION,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
    stage: str = "train",
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` and return what happened.

    ``penalty(model)``, when given, is added to the task loss at every step (e.g. L2-SP).
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    precision.prepare_model(model.to(device), device)
    groups, frozen = param_groups(model, config)
    if not groups:
        raise ValueError("every parameter is frozen; nothing to train")
    opt = _optimizer(groups, config)
    epochs, total = training_length(config, len(data))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) if config.schedule == "cosine" else None
    g = torch.Generator().manual_seed(seed)
    targets = task.targets(data)
    history, step, start, loss_sum = [], 0, time.perf_counter(), 0.0
    net, inputs = _frozen_once(model, data, frozen, device)
    for epoch in range(epochs):
        model.train()
        _hold_frozen_norms(model, frozen)
        order = torch.randperm(len(data), generator=g)
        if config.auto_rgn:  # on the first (up to) two batches of this epoch's order
            first = [order[a:b] for a, b in batch_bounds(len(data), config.batch_size)[:2]]
            probe = [(inputs[idx].to(device), targets[idx].to(device)) for idx in first]
            norms = relative_gradient_norms(net, probe, task, [grp["params"][0] for grp in opt.param_groups])
            _auto_rgn_rates(opt, norms, step / total, config.schedule)
        loss_sum, seen = 0.0, 0
        for a, b in batch_bounds(len(data), config.batch_size):
            if step == total:  # an exact ``steps`` count can end part-way through the last epoch
                break
            idx = order[a:b]
            x, y = precision.prepare_input(inputs[idx].to(device), device), targets[idx].to(device)
            with precision.autocast(device):  # bf16 on CUDA only
                loss = task.loss(net(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            step += 1
            if progress is not None:
                progress(ProgressEvent(stage, step, total, {"epoch": epoch + 1, "loss": loss.item()}))
        record = {"epoch": epoch + 1, "loss": loss_sum / seen}
        history.append(record)
    val_metric = evaluate(model, val, task, device, frozen=bool(frozen)) if val is not None and len(val) else None
    return TrainResult(
        epochs=epochs,
        steps=step,
        seconds=time.perf_counter() - start,
        final_loss=history[-1]["loss"],
        val_metric=val_metric,
        history=tuple(history),
        asked={"epochs": config.epochs, "steps": config.steps, "min_steps": config.min_steps},
        note=length_note(config, epochs),
    )


def _frozen_once(model: nn.Module, data: ImageSet, frozen: set[str], device) -> tuple[nn.Module, torch.Tensor]:
    """What a step runs and on what: the model on the images, or, with a frozen prefix that can be cut off
    (:mod:`paramreuse.training.frozen`), the rest of the model on the prefix's outputs, computed once."""
    if not frozen:
        return model, data.x
    model.train()
    _hold_frozen_norms(model, frozen)  # as every step runs them: the prefix's outputs are the steps' own
    split = split_frozen(model, frozen_norms(model, frozen))
    if not isinstance(split, FrozenSplit):
        return model, data.x
    return split.rest, split.features(data.x, device)


@torch.no_grad()
def predict(
    model: nn.Module, data: ImageSet, device: torch.device | str = "cpu", batch_size: int = 512, *, frozen: bool = False
) -> torch.Tensor:
    """Model outputs for every image, on the CPU.

    ``frozen``: the parameters without gradient are frozen ones (a frozen prefix's outputs on these
    images are computed once per process and reused, :mod:`paramreuse.training.frozen`).
    """
    precision.prepare_model(model.eval().to(device), device)
    split = split_frozen(model) if frozen and not all(p.requires_grad for p in model.parameters()) else None
    net, inputs = (split.rest, split.features(data.x, device)) if isinstance(split, FrozenSplit) else (model, data.x)
    outputs = []
    for i in range(0, len(data), batch_size):
        # a copy of stored prefix outputs: an in-place op after the cut must not change them
        batch = inputs[i : i + batch_size].clone() if net is not model else inputs[i : i + batch_size]
        with precision.autocast(device):  # bf16 on CUDA only
            out = net(precision.prepare_input(batch.to(device), device))
        outputs.append((out.float() if precision.enabled(device) else out).cpu())
    return torch.cat(outputs)


def evaluate(
    model: nn.Module, data: ImageSet, task: Task = CLASSIFICATION, device: torch.device | str = "cpu", *,
    frozen: bool = False,
) -> float:  # fmt: skip
    """The task metric of ``model`` on ``data`` (the mean of its per-image scores); ``frozen`` as :func:`predict`."""
    return task.value(predict(model, data, device, frozen=frozen), task.targets(data))


def evaluate_metrics(
    model: nn.Module, data: ImageSet, task: Task = CLASSIFICATION, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """The task metric and its secondary metric (IoU, SSIM) where the task has one, by name."""
    outputs, targets = predict(model, data, device), task.targets(data)
    values = {task.metric_name: task.value(outputs, targets)}
    extra = task.extra_scores(outputs, targets)
    if extra is not None:
        values[task.extra_metric] = float(extra.mean())
    return values


def paired_gain(a: nn.Module, b: nn.Module, data: TaskData, device, seed: int) -> dict:
    """Metric of ``a`` minus metric of ``b`` on the target test set, with a paired bootstrap CI (per test image)."""
    targets = data.kind.targets(data.test)
    scores = [data.kind.scores(predict(m, data.test, device), targets) for m in (a, b)]
    diffs = scores[0] - scores[1]
    return {"mean": float(diffs.mean()), "ci": mean_ci(diffs, seed=seed), "n": len(diffs),
            "ci_over": "target test images (paired bootstrap); seed-to-seed spread needs several study seeds"}  # fmt: skip
