"""Fit a state dict to a model by tensor names: its sizes, its input layer, its head.

Which tensors follow the input channels and which the number of classes is learned from the
architecture itself (built twice with different sizes), never from the order of a file's keys.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.registry import architecture_of, build_model


@dataclass(frozen=True)
class SizeKeys:
    """State-dict keys whose shape follows the input channels (dim 1) and the classes (dim 0).

    ``fixed_channels`` is the input channel count of an architecture that does not take one
    (a ``py:`` factory without ``in_channels``), else None.
    """

    inputs: tuple[str, ...]
    head: tuple[str, ...]
    fixed_channels: int | None = None


@functools.lru_cache(maxsize=64)
def size_keys(arch: str) -> SizeKeys:
    """The keys of ``arch`` that change with the input channels and with the number of classes."""
    arch = architecture_of(arch)
    with torch.random.fork_rng(devices=[]):  # building twice must not shift the caller's random stream
        a = build_model(arch, 2, 10, strict=False).state_dict()
        b = build_model(arch, 3, 11, strict=False)
    b_state = b.state_dict()
    common = [k for k in a if k in b_state and a[k].ndim == b_state[k].ndim]
    inputs = tuple(k for k in common if a[k].ndim >= 2 and a[k].shape[1] != b_state[k].shape[1])
    head = tuple(k for k in common if a[k].ndim >= 1 and a[k].shape[0] != b_state[k].shape[0])
    fixed = None
    if not inputs:
        convs = [m for m in b.modules() if isinstance(m, nn.modules.conv._ConvNd)]
        fixed = convs[0].in_channels if convs else None
    return SizeKeys(inputs, head, fixed)


def sizes_from_state(state: dict[str, torch.Tensor], arch: str) -> tuple[int, int]:
    """``(in_channels, num_classes)`` of a plain state dict of ``arch``, read from the tensors by name.

    A size whose tensors are missing falls back to a placeholder; loading then lists them.
    """
    keys = size_keys(arch)
    channels = next((int(state[k].shape[1]) for k in keys.inputs if k in state and state[k].ndim >= 2), None)
    classes = next((int(state[k].shape[0]) for k in keys.head if k in state and state[k].ndim >= 1), None)
    return channels or keys.fixed_channels or 1, classes or 1


@dataclass(frozen=True)
class Fit:
    """What :func:`fit_state` changed: heads made fresh, input layers adapted (state-dict keys)."""

    fresh: tuple[str, ...] = ()
    adapted: tuple[str, ...] = ()

    def notes(self, what: str) -> list[str]:
        """One human line per change, for the CLI."""
        notes = []
        if self.fresh:
            notes.append(f"{what}: fresh head for the target's classes ({', '.join(self.fresh)})")
        if self.adapted:
            notes.append(f"{what}: input layer adapted to the image channels ({', '.join(self.adapted)})")
        return notes


def fit_state(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    arch: str,
    *,
    where: str,
    keep_head: bool = True,
    adapt_input: bool = False,
) -> Fit:
    """Copy ``state`` into ``model`` by name (every other mismatch is an error that lists them).

    Args:
        arch: ``model``'s architecture spec (names its input and head tensors).
        where: how errors name the source, e.g. ``--init s.pt``.
        keep_head: copy the head when its shape fits; a head that does not fit is always fresh.
        adapt_input: an input layer with other channels is adapted as timm adapts pretrained
            weights (summed over RGB for one channel); else a channel mismatch is an error.
    """
    from paramreuse.models.checkpoint import load_state_dict_checked

    own, state, keys = model.state_dict(), dict(state), size_keys(arch)
    fresh = tuple(k for k in keys.head if k in own and (not keep_head or k not in state or state[k].shape != own[k].shape))
    for k in fresh:
        state[k] = own[k]
    adapted = []
    for k in keys.inputs:
        if k in state and k in own and state[k].ndim >= 2 and state[k].shape[1] != own[k].shape[1]:
            state[k] = _adapted_input(state[k], own[k], where, adapt_input)
            adapted.append(k)
    load_state_dict_checked(model, state, where)
    return Fit(fresh, tuple(adapted))


def _adapted_input(weight: torch.Tensor, own: torch.Tensor, where: str, adapt: bool) -> torch.Tensor:
    have, need = int(weight.shape[1]), int(own.shape[1])
    if not adapt or weight.ndim != 4:
        raise CheckpointError(
            f"{where} takes {have}-channel images but the data has {need} channels; use a checkpoint trained "
            f"on {need}-channel images (a pretrained spec's input layer is adapted instead)"
        )
    from timm.models import adapt_input_conv

    return adapt_input_conv(need, weight.float()).to(weight.dtype)
