"""Architectures, checkpoints and pretrained weights."""

from paramreuse.models.checkpoint import (
    ModelInfo,
    is_pretrained,
    load_checkpoint,
    load_state_dict_checked,
    read_info,
    read_state_dict,
    save_checkpoint,
)
from paramreuse.models.heads import head_names
from paramreuse.models.registry import architecture_of, build_model, list_kinds, register_kind, wants_pretrained
from paramreuse.models.state_dicts import Fit, fit_state, size_keys, sizes_from_state

__all__ = [
    "Fit",
    "ModelInfo",
    "architecture_of",
    "build_model",
    "fit_state",
    "head_names",
    "is_pretrained",
    "list_kinds",
    "load_checkpoint",
    "load_state_dict_checked",
    "read_info",
    "read_state_dict",
    "register_kind",
    "save_checkpoint",
    "size_keys",
    "sizes_from_state",
    "wants_pretrained",
]
