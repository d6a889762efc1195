"""Pretrained torchvision and timm weights, read from the caches those libraries fill; never downloaded.

torchvision keeps a weights file at ``$TORCH_HOME/hub/checkpoints/<name of its URL>`` (torch.hub's
directory); timm keeps it in the Hugging Face cache (``$HF_HUB_CACHE``, or ``$HF_HOME/hub``), or
like torchvision for weights that only have a URL. Files are read as tensors only (safetensors,
or ``torch.load(weights_only=True)``). Nothing cached: one error naming the file and how to put it there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from paramreuse.errors import CheckpointError, SpecError
from paramreuse.models.registry import spec_options
from paramreuse.models.state_dicts import check_finite, fit_state, load_state_dict_checked, read_state_dict


@dataclass(frozen=True)
class Pretrained:
    """The weights a spec names, as their library would build them: native sizes and tensors."""

    model: nn.Module
    in_channels: int
    num_classes: int
    file: Path


def torch_hub_file(url: str) -> Path:
    """Where torch.hub caches the download of ``url`` (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _torchvision(name: str, weights_name: str, spec: str) -> Pretrained:
    import torchvision  # heavy: only torchvision weights need it

    try:
        enum = torchvision.models.get_model_weights(name)
    except (KeyError, ValueError):
        raise SpecError(f"torchvision model {name!r} has no pretrained weights; drop weights= from {spec!r}") from None
    if weights_name not in enum.__members__:
        raise SpecError(f"{spec!r}: no weights {weights_name!r}; use DEFAULT or one of {', '.join(enum.__members__)}")
    weights = enum[weights_name]
    file = torch_hub_file(weights.url)
    if not file.is_file():
        raise CheckpointError(
            f"{spec}: no cached weights at {file}; nothing is downloaded. Put the file there "
            f"(download {weights.url}), or set TORCH_HOME to the folder whose hub/checkpoints/ holds it"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=len(weights.meta["categories"]))
    _load(model, file, spec)
    return Pretrained(model, 3, len(weights.meta["categories"]), file)


def _timm_file(name: str) -> tuple[Path | None, list[str]]:
    """The cached weights file of timm model ``name`` (with tag), and the places looked at."""
    from huggingface_hub import constants, try_to_load_from_cache  # heavy: only timm weights need it
    from timm.models import get_pretrained_cfg  # heavy: only timm weights need it

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise SpecError(f"timm model {name!r} has no pretrained weights; use pretrained=false or another tag")
    looked = []
    if cfg.hf_hub_id:
        for filename in (cfg.hf_hub_filename or "model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=constants.HF_HUB_CACHE)
            if isinstance(found, str):
                return Path(found), looked
            repo = "models--" + cfg.hf_hub_id.replace("/", "--")
            looked.append(f"{Path(constants.HF_HUB_CACHE) / repo}/snapshots/*/{filename}")
    if cfg.url:
        file = torch_hub_file(cfg.url)
        if file.is_file():
            return file, looked
        looked.append(str(file))
    return None, looked


def _timm(name: str, spec: str) -> Pretrained:
    import timm  # heavy: only timm weights need it

    if not timm.is_model(name):
        raise SpecError(f"unknown timm model {name!r}; see timm.list_models()")
    file, looked = _timm_file(name)
    if file is None:
        raise CheckpointError(
            f"{spec}: no cached weights (looked for {' and '.join(looked)}); nothing is downloaded. On a machine "
            f"with network run timm.create_model('{name}', pretrained=True) and copy its Hugging Face cache here, "
            "or set HF_HOME to where it is"
        )
    state = read_state_dict(file)
    try:  # timm's own loading: its per-model key filters, strict key check
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state})
    except (RuntimeError, KeyError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{spec}: cached weights {file} do not fit {name} ({first}); re-download them") from None
    return Pretrained(model, int(model.pretrained_cfg["input_size"][0]), int(model.num_classes), file)


def _load(model: nn.Module, file: Path, spec: str) -> None:
    state = read_state_dict(file)
    check_finite(state, str(file))
    load_state_dict_checked(model, state, f"{spec} (cached weights {file})")


def pretrained(spec: str) -> Pretrained:
    """The model with the pretrained weights ``spec`` names, at the sizes they were trained for."""
    kind, name, options = spec_options(spec)
    if kind == "torchvision":
        return _torchvision(name, str(options.get("weights", "DEFAULT")), spec)
    if kind == "timm":
        return _timm(name, spec)
    raise SpecError(f"{spec!r} names no pretrained weights; use torchvision:NAME?weights=DEFAULT or timm:NAME?pretrained=true")


def pretrained_into(model: nn.Module, spec: str, arch: str) -> nn.Module:
    """``model`` (architecture ``arch``, any sizes) with the weights of ``spec``: input layer adapted
    as timm adapts pretrained weights, a fresh head when the classes differ."""
    fit_state(pretrained(spec).model.state_dict(), model, arch, where=spec, adapt_input=True)
    return model
