"""Architectures and checkpoints."""

from paramreuse.models.checkpoint import (
    ModelInfo,
    load_checkpoint,
    load_state_dict_checked,
    read_info,
    read_state_dict,
    save_checkpoint,
)
from paramreuse.models.heads import head_names
from paramreuse.models.registry import build_model, list_kinds, register_kind

__all__ = [
    "ModelInfo",
    "build_model",
    "head_names",
    "list_kinds",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_info",
    "read_state_dict",
    "register_kind",
    "save_checkpoint",
]
