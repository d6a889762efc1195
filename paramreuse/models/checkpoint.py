"""Checkpoints: safetensors with the architecture and task recorded in the metadata.

A paramreuse checkpoint can be rebuilt from the file alone. Plain state dicts
(``.safetensors`` or ``.pt``) need the architecture from the caller; ``.pt`` files are read
with ``weights_only=True`` so that a pickle can never run code.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.registry import build_model
from paramreuse.results import write_atomic

METADATA_KEY = "paramreuse"


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        d["input_size"] = tuple(d.get("input_size", (28, 28)))
        d["classes"] = tuple(d.get("classes", ()))
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
    if not isinstance(info.extra, dict):
        raise TypeError("extra must be a table")


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write ``model``'s state dict and ``info`` to a safetensors file, atomically."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return write_atomic(path, save(tensors, metadata={METADATA_KEY: json.dumps(info.to_dict())}))


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pt`` file; ``.pt`` is read with weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    if path.suffix in (".pt", ".pth", ".bin"):
        return _read_pt(path)
    raise CheckpointError(f"{path}: unknown checkpoint format; use .safetensors (preferred) or .pt")


def _read_pt(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the error below says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds more than tensors ({_unpickling_reason(exc)}); "
            "re-save it as a plain state dict or as .safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001 - on damaged bytes the unpickler fails in many ways (IndexError, KeyError, ...)
        first = str(exc).strip().split(". ")[0] or type(exc).__name__
        raise CheckpointError(f"{path}: corrupt or truncated .pt file ({first}); re-save or re-download it") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return obj


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the pickle asked for."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or ["unsupported content"])[0].rstrip(".")


def check_finite(state: dict[str, torch.Tensor], where: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{where}: NaN or Inf values in {', '.join(bad[:5])}; the model diverged, retrain it")


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy ``state`` into ``model`` after checking key sets and shapes; list every mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_short(shapes)}")
    if problems:
        raise CheckpointError(
            f"{where} does not fit the architecture: {'; '.join(problems)}; "
            "use a checkpoint of the same architecture (--arch), input channels and classes"
        )
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])


def _short(items: list[str], n: int = 6) -> str:
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def infer_io(state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Guess (in_channels, num_outputs) of a plain state dict from its first and last weights."""
    weights = [v for k, v in state.items() if k.endswith("weight") and v.ndim >= 2]
    if not weights:
        raise CheckpointError("cannot infer the model's input and output sizes: no weight matrices found")
    first = next(v for v in weights if v.ndim == 4) if any(v.ndim == 4 for v in weights) else weights[0]
    return int(first.shape[1]), int(weights[-1].shape[0])


def load_checkpoint(
    path: str | Path, arch: str | None = None, trust_code: bool = False
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild a model from a checkpoint.

    Args:
        path: a paramreuse checkpoint, or a plain ``.safetensors``/``.pt`` state dict.
        arch: the architecture spec; required for plain state dicts, optional otherwise.
        trust_code: allow a recorded ``py:`` architecture to run its factory file. Passing
            ``arch`` explicitly counts as consent for that spec.
    """
    path = Path(path)
    state = read_state_dict(path)
    info = read_info(path)
    if info is None:
        if arch is None:
            raise CheckpointError(f"{path} is a plain state dict; say which architecture it is with --arch SPEC")
        in_channels, num_classes = infer_io(state)
        info = ModelInfo(arch=arch, in_channels=in_channels, num_classes=num_classes)
    elif arch is not None:
        info = dataclasses.replace(info, arch=arch)
    elif info.arch.startswith("py:") and not trust_code:
        raise CheckpointError(
            f"{path} records architecture {info.arch!r}, which runs that Python file; "
            f"pass --arch {info.arch} to confirm you trust it"
        )
    check_finite(state, str(path))
    model = build_model(info.arch, info.in_channels, info.num_classes)
    load_state_dict_checked(model, state, str(path))
    return model, info
