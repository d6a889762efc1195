"""Checkpoints: safetensors with the architecture and task recorded in the metadata.

A paramreuse checkpoint can be rebuilt from the file alone. Plain state dicts
(``.safetensors``, ``.pt`` or ``.pth``) need the architecture from the caller, and their sizes
are read from the tensors by name; ``.pt`` files are read with ``weights_only=True`` so that a
pickle can never run code. A pretrained spec (``torchvision:NAME?weights=DEFAULT``) stands for
the weights in the local cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.factory import build_model
from paramreuse.models.pretrained import pretrained
from paramreuse.models.registry import architecture_of, wants_pretrained
from paramreuse.models.state_dicts import check_finite, load_state_dict_checked, read_state_dict, sizes_from_state
from paramreuse.results import write_atomic

METADATA_KEY = "paramreuse"
DIGEST_KEY = "paramreuse.sha256"  # of the tensors as written: tells a damaged file from a NaN-trained model


@dataclass(frozen=True)
class ModelInfo:
    """What is needed to rebuild a model and to know what its outputs mean."""

    arch: str
    in_channels: int
    num_classes: int
    task: str = "classification"
    input_size: tuple[int, int] = (28, 28)
    data: str = ""
    classes: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = ()  # of ``classes``, as the data named them (files written before: none)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> dict:
        """What a reader needs to know of the model: its architecture, where its weights came from, its
        outputs and the data and classes it was trained on (when recorded)."""
        weights = self.extra.get("weights")
        return {"arch": self.arch, "weights": f"pretrained {weights} (local cache)" if weights else "the file",
                "outputs": self.num_classes, "trained_on": self.data, "classes": list(self.classes),
                "class_names": list(self.class_names)}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict) -> ModelInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["input_size"] = tuple(d.get("input_size", (28, 28)))
        d["classes"] = tuple(d.get("classes", ()))
        d["class_names"] = tuple(d.get("class_names", ()))
        info = cls(**d)
        _check_types(info)
        return info


def _check_types(info: ModelInfo) -> None:
    """Metadata read from a file is untrusted: wrong types raise TypeError here, not deep inside torch."""
    counts = (info.in_channels, info.num_classes, *info.input_size, *info.classes)
    if not isinstance(info.arch, str) or not isinstance(info.task, str) or not isinstance(info.data, str):
        raise TypeError("arch, task and data must be strings")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts) or len(info.input_size) != 2:
        raise TypeError("in_channels, num_classes, input_size and classes must be whole numbers")
    if not all(isinstance(n, str) for n in info.class_names):
        raise TypeError("class_names must be strings")
    if not isinstance(info.extra, dict):
        raise TypeError("extra must be a table")


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write ``model``'s state dict and ``info`` to a safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {METADATA_KEY: json.dumps(info.to_dict()), DIGEST_KEY: tensor_digest(tensors)}
    return write_atomic(path, save(tensors, metadata=metadata))


def tensor_digest(state: dict) -> str:
    """SHA-256 of the tensors' names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_digest(path: Path, state: dict) -> bool:
    """Whether ``path`` records a digest of its tensors; a wrong one means the file is damaged."""
    if path.suffix != ".safetensors":
        return False
    with safe_open(str(path), framework="pt") as f:  # read_info has already parsed this header
        stored = (f.metadata() or {}).get(DIGEST_KEY)
    if stored is None:
        return False
    if stored != tensor_digest(state):
        raise CheckpointError(
            f"{path} is corrupted (its tensors do not read back as written: their SHA-256 differs from the one "
            "saved with them); re-save or re-download it"
        )
    return True


def read_info(path: str | Path) -> ModelInfo | None:
    """The recorded ModelInfo of a paramreuse checkpoint, or None for a plain state dict."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc}); re-save it") from None
    if METADATA_KEY not in meta:
        return None
    try:
        return ModelInfo.from_dict(json.loads(meta[METADATA_KEY]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: corrupt paramreuse metadata ({exc})") from None


def pretrained_spec(source: str | Path) -> str | None:
    """``source`` when it is a spec naming pretrained weights rather than a file, else None."""
    text = str(source)
    if Path(text).exists() or not text.startswith(("torchvision:", "timm:")):
        return None
    if not wants_pretrained(text):
        raise CheckpointError(
            f"{text} names an architecture but no weights; add ?weights=DEFAULT (torchvision) or "
            "?pretrained=true (timm), or pass a checkpoint file"
        )
    return text


def load_checkpoint(
    path: str | Path,
    arch: str | None = None,
    trust_code: bool = False,
    *,
    input_size: tuple[int, int] | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild a model from a checkpoint, or from the pretrained weights a spec names.

    Args:
        path: a paramreuse checkpoint, a plain ``.safetensors``/``.pt``/``.pth`` state dict (any
            key order), or a pretrained spec such as ``torchvision:resnet18?weights=DEFAULT``.
        arch: the architecture spec; required for plain state dicts, whose sizes are read from the
            tensors by name; for a paramreuse checkpoint it replaces the recorded one.
        trust_code: allow a recorded ``py:`` architecture to run its factory file. Passing
            ``arch`` explicitly counts as consent for that spec.
        input_size: the image size the model takes, where no data tell it (recorded in the info).
    """
    spec = pretrained_spec(path)
    if spec is not None:
        return _load_pretrained(spec, input_size)
    path = Path(path)
    state = read_state_dict(path)
    info = read_info(path)
    if info is None:
        if arch is None:
            raise CheckpointError(f"{path} is a plain state dict; say which architecture it is with --arch SPEC")
        in_channels, num_classes = sizes_from_state(state, arch)
        info = ModelInfo(arch=architecture_of(arch), in_channels=in_channels, num_classes=num_classes)
    elif arch is not None:
        info = dataclasses.replace(info, arch=architecture_of(arch))
    elif info.arch.startswith("py:") and not trust_code:
        raise CheckpointError(
            f"{path} records architecture {info.arch!r}, which runs that Python file; "
            f"pass --arch {info.arch} to confirm you trust it"
        )
    if input_size is not None:
        info = dataclasses.replace(info, input_size=tuple(input_size))
    check_finite(state, str(path), verified=_check_digest(path, state))
    model = build_model(info.arch, info.in_channels, info.num_classes)
    load_state_dict_checked(model, state, str(path))
    return model, info


def _load_pretrained(spec: str, input_size: tuple[int, int] | None) -> tuple[nn.Module, ModelInfo]:
    weights = pretrained(spec)
    info = ModelInfo(
        arch=architecture_of(spec), in_channels=weights.in_channels, num_classes=weights.num_classes,
        input_size=tuple(input_size or (28, 28)), extra={"weights": spec},
    )  # fmt: skip
    return weights.model, info


def is_pretrained(info: ModelInfo) -> bool:
    """Whether the model came from a pretrained spec (its input layer may then be adapted)."""
    return "weights" in info.extra
