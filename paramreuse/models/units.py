"""Layer inventory: a model's parametric units, their parameter groups, and pairing two models.

A *unit* is a convolution or linear layer together with the normalisation layer that acts on
its output (found from the torch.fx graph, else from module order). Its parameter groups are
``conv.weight``, ``conv.bias`` (``conv`` names the unit's main layer, convolution or linear),
``bn.weight``, ``bn.bias`` and ``bn.stats`` (running mean and variance). A normalisation layer
that follows no convolution is a unit of its own with only the ``bn.*`` groups.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import fx, nn

from paramreuse.errors import ParamreuseError

MAIN_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)
GROUP_NAMES = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats")


class PairingError(ParamreuseError):
    """Two models whose parametric units differ in name, kind or shape."""


class GraphError(ParamreuseError):
    """A model that torch.fx cannot trace."""


@dataclass(frozen=True)
class ParamGroup:
    """One parameter group of a unit: its state-dict keys and their shapes."""

    name: str
    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Unit:
    """A parametric unit: the main layer ``name`` and the normalisation ``norm`` on its output."""

    name: str
    kind: str
    shape: tuple[int, ...]
    norm: str | None
    groups: tuple[ParamGroup, ...]

    def group(self, name: str) -> ParamGroup:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(f"unit {self.name} has no parameter group {name!r}; it has {[g.name for g in self.groups]}")

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for g in self.groups for k in g.keys)


class _Tracer(fx.Tracer):
    """Keeps convolutions, linear and normalisation layers (and their subclasses) as graph leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, MAIN_TYPES + NORM_TYPES) or super().is_leaf_module(m, qualname)


@contextmanager
def _tracing_flag():
    # Models such as smp's skip tracer-hostile input-shape checks when torch.jit.is_tracing().
    original = torch.jit.is_tracing
    torch.jit.is_tracing = lambda: True
    try:
        yield
    finally:
        torch.jit.is_tracing = original


def trace(model: nn.Module) -> fx.GraphModule:
    """The model's torch.fx graph (leaves: conv, linear, norm and other torch.nn layers).

    Raises:
        GraphError: when symbolic tracing fails (data-dependent control flow).
    """
    try:
        return fx.GraphModule(model, _Tracer().trace(model))
    except Exception:  # noqa: BLE001, S110 - any tracing failure gets one retry, then one clean error
        pass
    try:
        with _tracing_flag():
            return fx.GraphModule(model, _Tracer().trace(model))
    except Exception as exc:  # noqa: BLE001
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise GraphError(f"{type(model).__name__} cannot be traced by torch.fx ({first})") from None


def _key(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def _main_groups(name: str, module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    groups = [("conv.weight", (_key(name, "weight"),))]
    if getattr(module, "bias", None) is not None:
        groups.append(("conv.bias", (_key(name, "bias"),)))
    return groups


def _norm_groups(name: str, module: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    groups = []
    if getattr(module, "weight", None) is not None:
        groups.append(("bn.weight", (_key(name, "weight"),)))
    if getattr(module, "bias", None) is not None:
        groups.append(("bn.bias", (_key(name, "bias"),)))
    if getattr(module, "running_mean", None) is not None and getattr(module, "running_var", None) is not None:
        groups.append(("bn.stats", (_key(name, "running_mean"), _key(name, "running_var"))))
    return groups


def _make_unit(model: nn.Module, shapes: dict, name: str, norm: str | None) -> Unit:
    module = model.get_submodule(name)
    if isinstance(module, MAIN_TYPES):
        raw = _main_groups(name, module) + (_norm_groups(norm, model.get_submodule(norm)) if norm is not None else [])
        shape = tuple(module.weight.shape)
    else:
        raw = _norm_groups(name, module)
        shape = shapes.get(_key(name, "weight"), shapes.get(_key(name, "running_mean"), ()))
    groups = tuple(ParamGroup(g, keys, tuple(shapes[k] for k in keys)) for g, keys in raw)
    return Unit(name, type(module).__name__.lower(), tuple(shape), norm, groups)


def _graph_pairs(model: nn.Module) -> list[tuple[str, str | None]]:
    """(main layer, norm on its output) in execution order; unclaimed norms follow as (norm, None)."""
    graph = trace(model).graph
    order, norm_of, claimed = [], {}, set()
    for node in graph.nodes:
        if node.op != "call_module" or node.target in order:
            continue
        module = model.get_submodule(node.target)
        if isinstance(module, MAIN_TYPES):
            norms = [u.target for u in node.users if u.op == "call_module" and _is_norm(model, u.target)]
            if len(norms) == 1 and norms[0] not in claimed:
                norm_of[node.target] = norms[0]
                claimed.add(norms[0])
            order.append(node.target)
        elif isinstance(module, NORM_TYPES):
            order.append(node.target)
    pairs = [(name, norm_of.get(name)) for name in order if name not in claimed]
    seen = {n for pair in pairs for n in pair if n is not None}
    # Layers the forward never reaches still hold parameters: list them after, in module order.
    return pairs + [p for p in _module_order_pairs(model) if p[0] not in seen]


def _is_norm(model: nn.Module, name: str) -> bool:
    return isinstance(model.get_submodule(name), NORM_TYPES)


def _width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[0] if len(module.normalized_shape) == 1 else None
    return getattr(module, "num_features", None)


def _module_order_pairs(model: nn.Module) -> list[tuple[str, str | None]]:
    """(main layer, norm) by module order: a norm right after a layer of its width acts on it."""
    leaves = [(n, m) for n, m in model.named_modules() if isinstance(m, MAIN_TYPES + NORM_TYPES)]
    pairs, used = [], set()
    for i, (name, module) in enumerate(leaves):
        if name in used:
            continue
        nxt = leaves[i + 1] if i + 1 < len(leaves) else None
        if isinstance(module, MAIN_TYPES) and nxt and isinstance(nxt[1], NORM_TYPES) and _width(nxt[1]) == _width(module):
            pairs.append((name, nxt[0]))
            used.add(nxt[0])
        else:
            pairs.append((name, None))
    return pairs


def inventory(model: nn.Module) -> tuple[Unit, ...]:
    """The parametric units of ``model`` in execution order (module order when fx cannot trace it)."""
    try:
        pairs = _graph_pairs(model)
    except GraphError:
        pairs = _module_order_pairs(model)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return tuple(_make_unit(model, shapes, name, norm) for name, norm in pairs)


def _describe(unit: Unit) -> str:
    return f"{unit.name} {unit.kind} {unit.shape}"


def _unit_differences(a: Unit, b: Unit) -> list[str]:
    if (a.name, a.kind) != (b.name, b.kind):
        return [f"{_describe(a)} vs {_describe(b)}"]
    if a.group_names != b.group_names:
        return [f"{a.name} groups {list(a.group_names)} vs {list(b.group_names)}"]
    return [
        f"{key} {sa} vs {sb}"
        for ga, gb in zip(a.groups, b.groups)
        for key, sa, sb in zip(ga.keys, ga.shapes, gb.shapes)
        if sa != sb
    ]


def pair_units(source: nn.Module, target: nn.Module) -> tuple[Unit, ...]:
    """The units two models share; they must agree in names, kinds and shapes.

    Returns:
        The target's inventory (the source's is the same).

    Raises:
        PairingError: one line listing the first differences (source vs target).
    """
    units_s, units_t = inventory(source), inventory(target)
    diffs = [d for a, b in zip(units_s, units_t) for d in _unit_differences(a, b)]
    extra_s = [_describe(u) for u in units_s[len(units_t) :]]
    extra_t = [_describe(u) for u in units_t[len(units_s) :]]
    diffs += [f"only in source: {d}" for d in extra_s] + [f"only in target: {d}" for d in extra_t]
    if diffs:
        more = f" (+{len(diffs) - 5} more)" if len(diffs) > 5 else ""
        raise PairingError(
            f"source and target do not pair, {len(diffs)} difference(s), source vs target: "
            f"{'; '.join(diffs[:5])}{more}; compare two models of the same architecture and number of classes"
        )
    return units_t


def group_values(state: dict[str, torch.Tensor], group: ParamGroup) -> torch.Tensor:
    """The values of a parameter group as one flat float64 CPU vector."""
    return torch.cat([state[k].detach().reshape(-1).to("cpu", torch.float64) for k in group.keys])
