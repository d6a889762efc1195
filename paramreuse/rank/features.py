"""Per-layer features of a model on target images, for transferability scores at every depth.

A unit's feature is its output after its normalisation layer (before any activation),
globally average-pooled over the spatial dimensions: one D-vector per image, D the unit's
channels. Forward hooks on the unit's last module (its norm, else the layer itself) take the
pooled copy as soon as the module returns, so an in-place activation that follows cannot
change it. Besides the units, the *penultimate* feature is the input of the task head and the
*logits* are the head's outputs (the source model's predictions over its own classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from paramreuse.errors import ParamreuseError
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.units import inventory


@dataclass(frozen=True, eq=False)
class Features:
    """Features of N images: per unit (execution order, head excluded), penultimate, logits."""

    layers: tuple[str, ...]
    per_layer: dict[str, np.ndarray] = field(repr=False)
    penultimate: np.ndarray = field(repr=False)
    logits: np.ndarray = field(repr=False)
    head: str = ""

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def source_probs(self) -> np.ndarray:
        """Softmax of the head's outputs: the source model's class probabilities (for LEEP)."""
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def source_labels(self) -> np.ndarray:
        """The source model's predicted class per image (for NCE)."""
        return self.logits.argmax(1)


def pool(output: torch.Tensor) -> torch.Tensor:
    """Global average over every dimension after the channels; a copy, detached, float32 on the CPU."""
    if output.dim() > 2:
        output = output.flatten(2).mean(2)
    return output.detach().to("cpu", torch.float32).clone()


def feature_modules(model: nn.Module) -> dict[str, str]:
    """Unit name -> name of the module whose output is that unit's feature (its norm, else itself)."""
    head = head_module_name(model)
    return {u.name: (u.norm or u.name) for u in inventory(model) if not in_head(u.name, head)}


class _Recorder:
    """Forward hooks that keep the pooled output of named modules and the head's input."""

    def __init__(self, model: nn.Module, modules: dict[str, str], head: str):
        self.batch: dict[str, torch.Tensor] = {}
        self.handles = [
            model.get_submodule(module).register_forward_hook(self._keep(unit)) for unit, module in modules.items()
        ]
        self.handles.append(model.get_submodule(head).register_forward_pre_hook(self._keep_input))

    def _keep(self, unit: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):  # a module called twice keeps its last call
                self.batch[unit] = pool(output)

        return hook

    def _keep_input(self, _module, inputs):
        self.batch["__penultimate__"] = pool(inputs[0])

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> Features:
    """Run ``model`` (in eval mode; its mode is restored) over ``images`` and keep every feature.

    Units the forward pass never reaches have no features and are left out of ``layers``.

    Raises:
        ParamreuseError: the model's output is not N x classes (not a classifier).
    """
    head = head_module_name(model)
    modules = feature_modules(model)
    was_training = model.training
    model.eval().to(device)
    recorder = _Recorder(model, modules, head)
    collected: dict[str, list[torch.Tensor]] = {}
    logits = []
    try:
        for i in range(0, len(images), batch_size):
            recorder.batch = {}
            out = model(images[i : i + batch_size].to(device))
            if not isinstance(out, torch.Tensor) or out.dim() != 2:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ParamreuseError(f"features need a classifier whose output is N x classes, got {shape}")
            logits.append(out.detach().to("cpu", torch.float32))
            for name, value in recorder.batch.items():
                collected.setdefault(name, []).append(value)
    finally:
        recorder.close()
        model.train(was_training)
    batches = len(logits)
    if len(collected.get("__penultimate__", [])) != batches:
        raise ParamreuseError(
            f"the head {head!r} is not called in every forward pass; features need a plain classifier"
        )
    penultimate = torch.cat(collected.pop("__penultimate__")).numpy()
    layers = tuple(name for name in modules if len(collected.get(name, [])) == batches)
    per_layer = {name: torch.cat(collected[name]).numpy() for name in layers}
    return Features(layers, per_layer, penultimate, torch.cat(logits).numpy(), head)
