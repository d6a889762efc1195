"""Architectures, checkpoints and pretrained weights.

``registry`` (spec -> builder table), ``factory`` (builders + pretrained weights), ``pretrained``
(the local caches), ``state_dicts`` (read, check, fit), ``checkpoint`` (the file format),
``loading`` (a source as the verbs read it); ``units`` and ``heads`` name a model's parts.
"""

from paramreuse.models.checkpoint import ModelInfo, is_pretrained, load_checkpoint, read_info, save_checkpoint
from paramreuse.models.factory import build_model
from paramreuse.models.heads import head_names
from paramreuse.models.registry import architecture_of, list_kinds, register_kind, wants_pretrained
from paramreuse.models.state_dicts import (
    Fit,
    fit_state,
    load_state_dict_checked,
    read_state_dict,
    size_keys,
    sizes_from_state,
)

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
