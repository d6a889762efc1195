"""The table of architecture specs: ``KIND:NAME`` -> a builder of a fresh ``nn.Module``.

Kinds: ``builtin:NAME[?key=value&...]``, ``torchvision:NAME[?weights=DEFAULT|ENUM]``,
``timm:NAME[.TAG][?pretrained=true|false]``, ``smp:ARCH/ENCODER`` and ``py:FILE.py:FACTORY``.
Input channels and the number of outputs are always adapted explicitly. Pretrained weights
are put in by :mod:`paramreuse.models.factory` (see :mod:`paramreuse.models.pretrained`).
"""

from __future__ import annotations

import importlib.util
import inspect
import traceback
from collections.abc import Callable
from pathlib import Path

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


def build_fresh(spec: str, in_channels: int, num_classes: int, *, strict: bool = True) -> nn.Module:
    """Build the architecture named by ``spec`` with fresh parameters (its weights, if it names
    any, are :func:`paramreuse.models.factory.build_model`'s business).

    ``strict=False`` skips the check that a ``py:`` factory honoured ``in_channels`` (used to
    find which tensors follow the sizes).
    """
    if in_channels < 1 or num_classes < 1:
        raise SpecError(f"in_channels and num_classes must be positive, got {in_channels}, {num_classes}")
    kind, name = split_spec(spec)
    model = _BUILDERS[kind](name, in_channels, num_classes)
    if strict and kind == "py":
        _check_factory_channels(model, name, in_channels)
    return model


def spec_options(spec: str) -> tuple[str, str, dict]:
    """``(kind, name, options)`` of ``KIND:NAME?key=value&...``."""
    kind, rest = split_spec(spec)
    name, _, query = rest.partition("?") if kind != "py" else (rest, "", "")
    return kind, name, _parse_options(query, spec)


_OFF = ("none", "false", "0", "no")


def wants_pretrained(spec: str) -> bool:
    """Whether ``spec`` names pretrained weights: ``weights=`` (torchvision), ``pretrained=true`` or a
    timm tag such as ``resnet18.a1_in1k`` (a tag names weights; ``pretrained=false`` opts out)."""
    kind, name, options = spec_options(spec)
    if kind == "torchvision":
        return str(options.get("weights", "none")).lower() not in _OFF
    if kind == "timm":
        default = "true" if "." in name else "false"
        return str(options.get("pretrained", default)).lower() not in _OFF
    return False


def same_architecture(a: str, b: str) -> bool:
    """Whether specs ``a`` and ``b`` build one architecture: their weights aside, and a builtin's
    options equal to its defaults aside (``builtin:cnn`` is ``builtin:cnn?width=16``).

    >>> same_architecture("builtin:cnn", "builtin:cnn?width=16"), same_architecture("builtin:cnn", "builtin:cnn?width=8")
    (True, False)
    """
    return _canonical(architecture_of(a)) == _canonical(architecture_of(b))


def _canonical(spec: str) -> tuple:
    kind, name, options = spec_options(spec)
    if kind == "builtin" and name in BUILTIN:
        defaults = {k: p.default for k, p in inspect.signature(BUILTIN[name]).parameters.items()
                    if p.default is not inspect.Parameter.empty}  # fmt: skip
        options = {k: v for k, v in options.items() if defaults.get(k, object()) != v}
    return kind, name, tuple(sorted((k, str(v)) for k, v in options.items()))


def architecture_of(spec: str) -> str:
    """``spec`` without its weights: what a checkpoint records once the weights are in its tensors."""
    kind, name, options = spec_options(spec)
    if kind == "torchvision":
        options.pop("weights", None)
    elif kind == "timm":
        options.pop("pretrained", None)
        name = name.split(".")[0]
    else:
        return spec
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{kind}:{name}" + (f"?{query}" if query else "")


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


def _no_options(name: str, spec: str) -> str:
    """The model name of a spec whose only option (weights) was handled by :func:`build_model`."""
    base, _, query = name.partition("?")
    unknown = [k for k in _parse_options(query, spec) if k not in ("weights", "pretrained")]
    if unknown:
        raise SpecError(f"unknown option {unknown[0]!r} in {spec!r}; torchvision takes weights=, timm pretrained=")
    return base


@register_kind("torchvision")
def _build_torchvision(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision  # heavy: only this kind of spec needs it

    name = _no_options(name, f"torchvision:{name}")
    if name not in torchvision.models.list_models():
        raise SpecError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    return first_conv_replaced(model, in_channels)


@register_kind("timm")
def _build_timm(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import timm  # heavy: only this kind of spec needs it

    name = _no_options(name, f"timm:{name}")
    if not timm.is_model(name):
        raise SpecError(f"unknown timm model {name!r}; see timm.list_models()")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


@register_kind("smp")
def _build_smp(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import segmentation_models_pytorch as smp  # heavy: only this kind of spec needs it

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
    factory = getattr(_import_file(path), factory_name, None)
    if not callable(factory):
        raise SpecError(f"py spec: {file} has no callable {factory_name!r}")
    accepted = inspect.signature(factory).parameters
    kwargs = {k: v for k, v in (("in_channels", in_channels), ("num_classes", num_classes)) if k in accepted}
    call = f"{factory_name}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code may fail in any way; say where and what
        raise SpecError(f"py spec: {call} in {file} raised {_where(exc, path)}; fix the factory") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"py spec: {factory_name}() in {file} returned {type(model).__name__}, not an nn.Module")
    return model


def _import_file(path: Path):
    module_spec = importlib.util.spec_from_file_location(f"paramreuse_user_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a syntax error, a missing import, anything the file runs
        raise SpecError(f"py spec: {path} does not import ({_where(exc, path)}); fix the file") from None
    return module


def _where(exc: Exception, path: Path) -> str:
    """``Type: message (line N)``, the line being the deepest one of the user's file."""
    message = (str(exc).strip().splitlines() or [""])[0]
    line = exc.lineno if isinstance(exc, SyntaxError) else None
    if isinstance(exc, SyntaxError):
        message = exc.msg
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{type(exc).__name__}: {message}" + (f", line {line}" if line else "")


def _check_factory_channels(model: nn.Module, name: str, in_channels: int) -> None:
    """A factory whose convolutions never take ``in_channels`` inputs ignored it (or has no such parameter)."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs or any(m.in_channels == in_channels for m in convs):
        return
    file, _, factory = name.rpartition(":")
    first = convs[0].in_channels
    raise SpecError(
        f"py spec: {factory}() in {file} ignores in_channels={in_channels}: its first convolution takes {first} "
        f"channels; build the first layer with in_channels (def {factory}(in_channels, num_classes))"
    )
