"""A model as the verbs read it, and S fitted to a target's channels and classes.

Every verb that reads a model (``compare``, ``replace``, ``plan``, ``train --init``,
``transfer``, ``rank``) goes through :func:`load_source`, so a paramreuse checkpoint, a plain
state dict with ``--arch`` and a pretrained spec work the same everywhere.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from paramreuse.errors import SpecError
from paramreuse.models.checkpoint import ModelInfo, is_pretrained, load_checkpoint, pretrained_spec, read_info
from paramreuse.models.factory import build_model
from paramreuse.models.registry import architecture_of, same_architecture
from paramreuse.models.state_dicts import Fit, fit_state


def load_source(
    source: str | Path, arch: str | None = None, *, input_size: tuple[int, int] | None = None
) -> tuple[nn.Module, ModelInfo]:
    """Load a paramreuse checkpoint (its recorded architecture; ``arch`` naming the same one confirms a
    ``py:`` spec), a plain state dict of architecture ``arch``, or a pretrained spec."""
    kept = recorded_arch(source)
    if kept is not None and arch is not None and not same_architecture(arch, kept):
        raise SpecError(
            f"{source} records architecture {kept} but --arch is {arch}; a model keeps the architecture it records, "
            f"and S and T share one: pass --arch {kept}, or use a model of {arch}"
        )
    if kept is None or pretrained_spec(source):
        return load_checkpoint(source, arch, input_size=input_size)
    return load_checkpoint(Path(str(source)), trust_code=arch is not None, input_size=input_size)


def recorded_arch(source: str | Path) -> str | None:
    """The architecture a paramreuse checkpoint records or a pretrained spec names; None for a plain state dict."""
    spec = pretrained_spec(source)
    if spec is not None:
        return architecture_of(spec)
    path = Path(str(source))
    info = read_info(path) if path.suffix == ".safetensors" and path.is_file() else None
    return None if info is None else info.arch


def check_one_architecture(source: str | Path, target: str | Path, arch: str | None) -> None:
    """S and T of one architecture, before either is loaded: S's and T's recorded ones, or ``--arch``."""
    s_arch, t_arch = recorded_arch(source) or arch, recorded_arch(target) or arch
    if s_arch is None or t_arch is None or same_architecture(s_arch, t_arch):
        return
    raise SpecError(
        f"S ({source}) is {s_arch} but T ({target}) is {t_arch}; S and T must share one "
        f"architecture (--arch names it for plain state dicts, S and T alike): make a T from S with "
        f"`paramreuse train --arch {s_arch} --init {source} --data ...`, or use an S of {t_arch}"
    )


def rebuilt_for(
    state: dict[str, torch.Tensor], arch: str, *, channels: int, num_outputs: int, seed: int, where: str,
    keep_head: bool = False, adapt_input: bool = False,
) -> tuple[nn.Module, Fit]:  # fmt: skip
    """S in a target's shape: ``arch`` built for ``channels`` and ``num_outputs`` under ``seed`` (the
    caller's random stream untouched), then every tensor of ``state`` copied in (see :func:`fit_state`):
    the head fresh unless ``keep_head`` and it fits, the input layer adapted only with ``adapt_input``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, channels, num_outputs)
    fit = fit_state(state, model, arch, where=where, keep_head=keep_head, adapt_input=adapt_input)
    return model, fit


def fit_to(
    source: nn.Module, info: ModelInfo, *, channels: int, num_outputs: int, seed: int = 0, where: str,
    keep_head: bool = False,
) -> tuple[nn.Module, Fit]:  # fmt: skip
    """A loaded S rebuilt for ``channels`` and ``num_outputs`` (:func:`rebuilt_for`), the input layer
    adapted only for pretrained weights; in eval mode."""
    model, fit = rebuilt_for(source.state_dict(), info.arch, channels=channels, num_outputs=num_outputs, seed=seed,
                             where=where, keep_head=keep_head, adapt_input=is_pretrained(info))  # fmt: skip
    return model.eval(), fit


def check_takes(model: nn.Module, example: torch.Tensor, *, what: str, fix: str, noun: str = "inputs") -> torch.Size:
    """Run ``example`` through ``model`` once (eval, no grad); a failure is one line with ``fix``."""
    modes = {m: m.training for m in model.modules()}
    try:
        with torch.no_grad():
            return model.eval()(example).shape
    except Exception as exc:  # noqa: BLE001 - any failure here means the input does not fit the architecture
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        size = "x".join(map(str, example.shape[1:]))
        raise SpecError(f"{what} cannot take {size} {noun} ({first}); {fix}") from None
    finally:
        for m, mode in modes.items():
            m.train(mode)
