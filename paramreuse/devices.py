"""Which device computes: ``--device auto|cpu|cuda``."""

from __future__ import annotations

import torch

from paramreuse.errors import ParamreuseError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamreuseError("--device cuda asked for, but no CUDA device is available; use --device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise ParamreuseError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)
