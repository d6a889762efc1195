"""One registry for architecture specs: ``KIND:NAME`` -> ``nn.Module``.

Kinds: ``builtin:NAME[?key=value&...]``, ``torchvision:NAME``, ``timm:NAME``,
``smp:ARCH/ENCODER`` and ``py:FILE.py:FACTORY``. Input channels and the number of outputs
are always adapted explicitly; no pretrained weights are ever downloaded here.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Callable

from torch import nn

from paramreuse.errors import SpecError
from paramreuse.models.builtin import BUILTIN

Builder = Callable[[str, int, int], nn.Module]
_BUILDERS: dict[str, Builder] = {}


def register_kind(kind: str) -> Callable[[Builder], Builder]:
    """Register a builder for ``kind:``; a duplicate kind is a programming error."""

    def wrap(fn: Builder) -> Builder:
        if kind in _BUILDERS:
            raise ValueError(f"architecture kind {kind!r} is registered twice")
        _BUILDERS[kind] = fn
        return fn

    return wrap


def list_kinds() -> list[str]:
    return sorted(_BUILDERS)


def split_spec(spec: str) -> tuple[str, str]:
    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise SpecError(
            f"architecture spec {spec!r} has no kind; write KIND:NAME with KIND one of "
            f"{', '.join(list_kinds())} (e.g. builtin:cnn)"
        )
    if kind not in _BUILDERS:
        raise SpecError(
            f"unknown architecture kind {kind!r} in {spec!r}; use one of {', '.join(list_kinds())}"
        )
    return kind, name


def build_model(spec: str, in_channels: int, num_classes: int) -> nn.Module:
    """Build the architecture named by ``spec`` with fresh (untrained) parameters."""
    if in_channels < 1 or num_classes < 1:
        raise SpecError(f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}")
    kind, name = split_spec(spec)
    return _BUILDERS[kind](name, in_channels, num_classes)


def _parse_options(text: str, spec: str) -> dict[str, int | float | str]:
    options: dict[str, int | float | str] = {}
    for item in filter(None, text.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"option {item!r} in {spec!r} needs a value; write key=value")
        for cast in (int, float):
            try:
                options[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


@register_kind("builtin")
def _build_builtin(name: str, in_channels: int, num_classes: int) -> nn.Module:
    base, _, query = name.partition("?")
    if base not in BUILTIN:
        raise SpecError(f"unknown builtin architecture {base!r}; available: {', '.join(sorted(BUILTIN))}")
    options = _parse_options(query, f"builtin:{name}")
    try:
        return BUILTIN[base](in_channels, num_classes, **options)
    except TypeError as exc:
        raise SpecError(f"builtin:{name}: {exc}") from None


def first_conv_replaced(model: nn.Module, in_channels: int) -> nn.Module:
    """Replace the model's first Conv2d by one taking ``in_channels`` inputs (fresh weights)."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels != in_channels:
                    setattr(parent, child_name, _conv_like(child, in_channels))
                return model
    raise SpecError("cannot adapt input channels: the model has no Conv2d layer")


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1 if conv.groups == conv.in_channels == conv.out_channels else conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )


@register_kind("torchvision")
def _build_torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    if name not in torchvision.models.list_models():
        raise SpecError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return first_conv_replaced(model, in_channels)


@register_kind("timm")
def _build_timm(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import timm

    if not timm.is_model(name):
        raise SpecError(f"unknown timm model {name!r}; see timm.list_models()")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


@register_kind("smp")
def _build_smp(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp

    arch, sep, encoder = name.partition("/")
    if not sep or not encoder:
        raise SpecError(f"smp spec {name!r} needs ARCH/ENCODER, e.g. smp:Unet/resnet18")
    try:
        return smp.create_model(
            arch, encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=num_classes
        )
    except (KeyError, ValueError) as exc:
        raise SpecError(f"smp:{name}: {exc}") from None


@register_kind("py")
def _build_py(name: str, in_channels: int, num_classes: int) -> nn.Module:
    file, sep, factory_name = name.rpartition(":")
    if not sep or not file.endswith(".py"):
        raise SpecError(f"py spec {name!r} must be FILE.py:FACTORY, e.g. py:models/my_net.py:build")
    path = Path(file)
    if not path.is_file():
        raise SpecError(f"py spec: file {file} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"paramreuse_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise SpecError(f"py spec: {file} has no callable {factory_name!r}")
    accepted = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in (("in_channels", in_channels), ("num_classes", num_classes)) if k in accepted}
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise SpecError(f"py spec: {factory_name}() returned {type(model).__name__}, not an nn.Module")
    return model
