"""State dicts: read from a file (tensors only), checked against a model, fitted to it by tensor names.

Which tensors follow the input channels and which the number of classes is learned from the
architecture itself (built twice with different sizes), never from the order of a file's keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.registry import architecture_of, build_fresh


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


def check_finite(state: dict[str, torch.Tensor], where: str, verified: bool = False) -> None:
    """NaN or Inf values: a diverged model when the file's tensors match the digest saved with them
    (``verified``); without a digest to check, a damaged file could be the cause too, and the message says so."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad and verified:
        raise CheckpointError(f"{where}: NaN or Inf values in {', '.join(bad[:5])}; the model diverged, retrain it")
    if bad:
        raise CheckpointError(
            f"{where}: NaN or Inf values in {', '.join(bad[:5])}; the model diverged, or the file is damaged "
            "(it records no checksum to tell): retrain it, or re-save or re-download it"
        )


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


def state_digest(state: dict) -> str:
    """A content hash of a state dict: every key, dtype, shape and byte of every tensor, in the dict's order.

    Two states hash alike only when they hold the same tensors (a reordered or permuted tensor
    differs), so stored work from other weights is never reused.
    """
    h = hashlib.sha256()
    for key, value in state.items():
        tensor = torch.as_tensor(value).detach().cpu().contiguous()
        h.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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
        a = build_fresh(arch, 2, 10, strict=False).state_dict()
        b = build_fresh(arch, 3, 11, strict=False)
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
    from timm.models import adapt_input_conv  # timm is slow to import; only pretrained inputs need it

    return adapt_input_conv(need, weight.float()).to(weight.dtype)
