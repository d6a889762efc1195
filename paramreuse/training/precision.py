"""Mixed precision on a GPU: bf16 autocast and channels-last memory, for training and evaluation.

Used only when the device is CUDA; on the CPU nothing changes (fp32, the default memory format).
``PARAMREUSE_MIXED_PRECISION=off`` keeps fp32 on CUDA too. Not yet measured against fp32 on a
study (docs/speed.md): a GPU check is to show that results stay within the seeds' spread.
"""

from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

SWITCH = "PARAMREUSE_MIXED_PRECISION"


def enabled(device: torch.device | str) -> bool:
    """Whether training and evaluation on ``device`` use bf16 autocast and channels-last (CUDA only)."""
    off = os.environ.get(SWITCH, "on").strip().lower() in ("off", "0", "false", "no")
    return torch.device(device).type == "cuda" and not off


def autocast(device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; elsewhere a context that changes nothing."""
    if enabled(device):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: nn.Module, device: torch.device | str) -> nn.Module:
    """The model in channels-last memory on CUDA (4-d weights only); untouched elsewhere."""
    return model.to(memory_format=torch.channels_last) if enabled(device) else model


def prepare_input(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """A batch of images in channels-last memory on CUDA; untouched elsewhere."""
    return x.contiguous(memory_format=torch.channels_last) if enabled(device) and x.dim() == 4 else x
