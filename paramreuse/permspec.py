"""Permutation specs: which tensor axes of a model index the same channels, read from its graph.

The channels of a hidden layer can be permuted without changing the network's function, as
long as every tensor axis that indexes those channels is permuted alike. Which axes move
together (a *permutation group*) is read from the torch.fx graph: a convolution or linear
layer starts a group on its output; normalisation layers, activations, pooling and
channel-preserving reshapes carry it on; residual additions merge groups; concatenation along
channels splits the next layer's input axis into slices; the network input, the outputs and
anything the rules do not know are never permuted (always safe: an unknown op only loses
alignment freedom, never correctness). Applying a permutation to a state dict lives here too.
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from paramreuse.errors import ParamreuseError
from paramreuse.layers import NORM_TYPES, trace


class AlignmentError(ParamreuseError):
    """Alignment that cannot be done as asked (untraceable model, missing data)."""


@dataclass(frozen=True)
class AxisRef:
    """A slice ``[offset, offset + size)`` of axis ``axis`` of state-dict entry ``key``, moved by ``group``."""

    group: str
    key: str
    axis: int
    offset: int
    size: int


@dataclass(frozen=True)
class PermGroup:
    """Channels that are permuted together, and every tensor axis that indexes them."""

    name: str
    size: int
    refs: tuple[AxisRef, ...]


@dataclass(frozen=True)
class PermSpec:
    """All permutation groups of a model, and the graph nodes whose outputs carry each group."""

    groups: tuple[PermGroup, ...]
    probes: tuple[tuple[str, str], ...]

    def group_of(self, key: str, axis: int = 0) -> str | None:
        """The group that permutes ``axis`` of ``key`` (its first slice), or None."""
        for group in self.groups:
            for ref in group.refs:
                if ref.key == key and ref.axis == axis:
                    return group.name
        return None


# Spaces: an int is one channel space (union-find id); a tuple of (id, size) is a channel concat.
Space = int | tuple[tuple[int, int], ...] | None

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Identity, nn.modules.dropout._DropoutNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Upsample,
)  # fmt: skip
_PASS_FUNCS = {
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu,
    F.hardswish, F.hardsigmoid, F.mish, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.interpolate, operator.add, operator.iadd, operator.mul, operator.imul, operator.sub,
    operator.truediv, torch.add, torch.mul, torch.sub,
}  # fmt: skip
_PASS_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "contiguous", "clone", "float", "detach",
                 "add", "add_", "mul", "mul_", "sub", "div"}  # fmt: skip
_RESHAPES = {torch.flatten, torch.squeeze, torch.reshape, "flatten", "view", "reshape", "squeeze", "unsqueeze"}
_REDUCTIONS = {torch.mean, torch.sum, torch.amax, "mean", "sum", "amax"}
_CATS = {torch.cat, torch.concat, torch.concatenate}


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


class _Spaces:
    """Union-find over channel spaces, with a 'never permuted' flag and the axes bound to each."""

    def __init__(self):
        self.parent, self.size, self.fixed, self.origin = [], [], [], []
        self.bindings: list[tuple[int, str, int, int, int]] = []

    def new(self, size: int, fixed: bool = False, origin: str = "") -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.fixed.append(fixed)
        self.origin.append(origin)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = sorted((self.find(a), self.find(b)))
        if a != b:
            self.parent[b] = a
            self.fixed[a] = self.fixed[a] or self.fixed[b] or self.size[a] != self.size[b]
        return a

    def fix(self, space: Space) -> None:
        for i, _ in _parts(space):
            self.fixed[self.find(i)] = True

    def bind(self, key: str, axis: int, space: Space) -> None:
        offset = 0
        for i, size in _parts(space, self.size):
            self.bindings.append((i, key, axis, offset, size))
            offset += size


def _parts(space: Space, sizes: list[int] | None = None) -> list[tuple[int, int]]:
    if space is None:
        return []
    if isinstance(space, int):
        return [(space, sizes[space] if sizes else 0)]
    return list(space)


def _key(module: str, attr: str) -> str:
    return f"{module}.{attr}" if module else attr


def _conv(sp: _Spaces, node: fx.Node, m: nn.modules.conv._ConvNd, xs: Space) -> Space:
    in_axis, out_axis = (0, 1) if m.transposed else (1, 0)
    key = node.target
    if m.groups == 1:
        sp.bind(_key(key, "weight"), in_axis, xs)
        out = sp.new(m.out_channels, origin=key)
        sp.bind(_key(key, "weight"), out_axis, out)
    elif m.groups == m.in_channels == m.out_channels:  # depthwise: each channel keeps its own filter
        out = xs
        sp.bind(_key(key, "weight"), 0, out)
    else:  # other grouped convolutions: channels may not cross groups; keep them in place
        sp.fix(xs)
        return sp.new(m.out_channels, fixed=True)
    if m.bias is not None:
        sp.bind(_key(key, "bias"), 0, out)
    return out


def _linear(sp: _Spaces, node: fx.Node, m: nn.Linear, xs: Space) -> Space:
    if len(_shape(node.args[0]) or ()) != 2:  # features on the last axis of a sequence: not handled
        sp.fix(xs)
        return sp.new(m.out_features, fixed=True)
    sp.bind(_key(node.target, "weight"), 1, xs)
    out = sp.new(m.out_features, origin=node.target)
    sp.bind(_key(node.target, "weight"), 0, out)
    if m.bias is not None:
        sp.bind(_key(node.target, "bias"), 0, out)
    return out


def _norm(sp: _Spaces, node: fx.Node, m: nn.Module, xs: Space) -> Space:
    per_channel = isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)) or (
        isinstance(m, nn.GroupNorm) and m.num_groups in (1, m.num_channels)
    )
    if not per_channel:
        sp.fix(xs)
        return xs
    for attr in ("weight", "bias", "running_mean", "running_var"):
        if getattr(m, attr, None) is not None:
            sp.bind(_key(node.target, attr), 0, xs)
    return xs


def _elementwise(sp: _Spaces, node: fx.Node, spaces: dict) -> Space:
    """Channels of all full-width tensor inputs line up with the output's: merge them."""
    out = _shape(node)
    inputs = [n for n in node.all_input_nodes if spaces.get(n) is not None]
    merged: list[Space] = []
    if out is None or len(out) < 2:
        return _unknown(sp, node, spaces)
    for n in inputs:
        shape = _shape(n)
        if shape is None or len(shape) > len(out):
            return _unknown(sp, node, spaces)
        channel_dim = 1 - (len(out) - len(shape))  # shapes broadcast aligned on the right
        if channel_dim < 0 or shape[channel_dim] == 1 != out[1]:
            continue  # broadcast over channels: a scalar or a (N, 1, ...) gate
        if channel_dim != 1 or shape[1] != out[1]:
            return _unknown(sp, node, spaces)
        merged.append(spaces[n])
    if not merged:
        return _unknown(sp, node, spaces)
    if all(isinstance(s, int) for s in merged):
        root = merged[0]
        for s in merged[1:]:
            root = sp.union(root, s)
        return root
    if all(s == merged[0] for s in merged):
        return merged[0]
    return _unknown(sp, node, spaces)


def _reshape(sp: _Spaces, node: fx.Node, spaces: dict) -> Space:
    # Row-major layout: a reshape that keeps the batch and channel sizes keeps every channel in place.
    x = node.args[0]
    src, out = _shape(x), _shape(node)
    if src is not None and len(src) >= 2 and len(out) >= 2 and src[:2] == out[:2]:
        return spaces.get(x)
    return _unknown(sp, node, spaces)


def _reduction(sp: _Spaces, node: fx.Node, spaces: dict) -> Space:
    x, src = node.args[0], _shape(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if src is None or dims is None:
        return _unknown(sp, node, spaces)
    dims = {d % len(src) for d in ((dims,) if isinstance(dims, int) else dims)}
    return spaces.get(x) if not dims & {0, 1} else _unknown(sp, node, spaces)


def _cat(sp: _Spaces, node: fx.Node, spaces: dict) -> Space:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = _shape(node)
    if dim % len(out) != 1:
        return _elementwise(sp, node, spaces)
    parts: list[tuple[int, int]] = []
    for n in tensors:
        if spaces.get(n) is None or _shape(n) is None:
            return _unknown(sp, node, spaces)
        parts += _parts(spaces[n], sp.size)
    return tuple(parts)


def _unknown(sp: _Spaces, node: fx.Node, spaces: dict) -> Space:
    for n in node.all_input_nodes:
        sp.fix(spaces.get(n))
    shape = _shape(node)
    return sp.new(shape[1] if shape and len(shape) >= 2 else 0, fixed=True) if "tensor_meta" in node.meta else None


def _module_space(sp: _Spaces, node: fx.Node, m: nn.Module, spaces: dict) -> Space:
    xs = spaces.get(node.args[0]) if node.args else None
    if isinstance(m, nn.modules.conv._ConvNd):
        return _conv(sp, node, m, xs)
    if isinstance(m, nn.Linear):
        return _linear(sp, node, m, xs)
    if isinstance(m, NORM_TYPES):
        return _norm(sp, node, m, xs)
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return _reshape(sp, node, spaces)
    if isinstance(m, _PASS_MODULES) and len(node.all_input_nodes) == 1:
        return _elementwise(sp, node, spaces)
    return _unknown(sp, node, spaces)


def _node_space(sp: _Spaces, node: fx.Node, gm: fx.GraphModule, spaces: dict) -> Space:
    if node.op in ("placeholder", "get_attr"):
        shape = _shape(node)
        return sp.new(shape[1] if shape and len(shape) >= 2 else 0, fixed=True) if "tensor_meta" in node.meta else None
    if node.op == "output":
        return _unknown(sp, node, spaces)
    if node.op == "call_module":
        return _module_space(sp, node, gm.get_submodule(node.target), spaces)
    if "tensor_meta" not in node.meta:
        return None  # shapes, sizes, asserts: reading a shape does not constrain channels
    target = node.target
    if target in _CATS:
        return _cat(sp, node, spaces)
    if target in _RESHAPES:
        return _reshape(sp, node, spaces)
    if target in _REDUCTIONS:
        return _reduction(sp, node, spaces)
    if target in _PASS_FUNCS or (node.op == "call_method" and target in _PASS_METHODS):
        return _elementwise(sp, node, spaces)
    return _unknown(sp, node, spaces)


def _example_input(model: nn.Module) -> torch.Tensor:
    param = next(model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return torch.zeros(2, m.in_channels, *[64] * len(m.kernel_size), dtype=param.dtype, device=param.device)
        if isinstance(m, nn.Linear):
            return torch.zeros(2, m.in_features, dtype=param.dtype, device=param.device)
    raise AlignmentError(f"{type(model).__name__} has no convolution or linear layer to align")


def _traced_with_shapes(model: nn.Module, example: torch.Tensor | None) -> fx.GraphModule:
    try:
        gm = trace(model)
    except ParamreuseError as exc:
        raise AlignmentError(f"{exc}; permutation alignment needs the graph, use align='none'") from None
    modes = {m: m.training for m in model.modules()}
    try:
        gm.eval()
        with torch.no_grad():
            x = example.to(next(model.parameters()).device) if example is not None else _example_input(model)
            ShapeProp(gm).propagate(x)
    except Exception as exc:  # noqa: BLE001 - a wrong example input surfaces as any kind of error
        raise AlignmentError(f"cannot run {type(model).__name__} on the example input ({exc}); pass example_input")
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return gm


def _resolve_bindings(sp: _Spaces) -> dict[int, list[tuple[str, int, int, int]]]:
    """Group the bound axes by root; an axis bound to two spaces merges them (shared weights)."""
    first: dict[tuple, int] = {}
    for i, key, axis, offset, size in sp.bindings:
        ref = (key, axis, offset, size)
        first[ref] = sp.union(first[ref], i) if ref in first else i
    slices = defaultdict(set)
    for key, axis, offset, size in first:
        slices[(key, axis)].add((offset, size))
    for (key, axis), spans in slices.items():
        ends = sorted(spans)
        if any(a[0] + a[1] > b[0] for a, b in zip(ends, ends[1:])):  # overlapping slices: keep in place
            for span in spans:
                sp.fixed[sp.find(first[(key, axis, *span)])] = True
    by_root: dict[int, list] = defaultdict(list)
    for ref, i in first.items():
        root = sp.find(i)
        if not sp.fixed[root]:
            by_root[root].append(ref)
    return by_root


def permutation_spec(model: nn.Module, example_input: torch.Tensor | None = None) -> PermSpec:
    """The permutation groups of ``model``, read from its traced graph.

    Args:
        model: the network; it is run once (eval mode, no grad) to learn tensor shapes.
        example_input: a batch the model accepts; default zeros of 2 x C x 64 x 64 for the first conv.

    Raises:
        AlignmentError: the model cannot be traced or run on the example input.
    """
    gm = _traced_with_shapes(model, example_input)
    sp, spaces = _Spaces(), {}
    for node in gm.graph.nodes:
        spaces[node] = _node_space(sp, node, gm, spaces)
    by_root = _resolve_bindings(sp)
    names: dict[int, str] = {}
    for k, root in enumerate(sorted(by_root)):
        name = sp.origin[root] or f"group{k}"
        names[root] = name if name not in names.values() else f"{name}#{k}"
    groups = tuple(
        PermGroup(names[root], sp.size[root], tuple(AxisRef(names[root], *ref) for ref in refs))
        for root, refs in sorted(by_root.items())
    )
    probes = tuple(
        (node.name, names[sp.find(s)])
        for node, s in spaces.items()
        if isinstance(s, int) and sp.find(s) in names and node.op != "output"
    )
    return PermSpec(groups, probes)


def random_permutation(spec: PermSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random permutation of every group (for tests and benchmarks)."""
    g = torch.Generator().manual_seed(seed)
    return {group.name: torch.randperm(group.size, generator=g) for group in spec.groups}


def refs_by_key(spec: PermSpec) -> dict[str, list[AxisRef]]:
    by_key: dict[str, list[AxisRef]] = defaultdict(list)
    for group in spec.groups:
        for ref in group.refs:
            by_key[ref.key].append(ref)
    return by_key


def permuted_tensor(t: torch.Tensor, refs: list[AxisRef], perms: dict, skip: AxisRef | None = None) -> torch.Tensor:
    """``t`` with the slice of every ref (except ``skip``) permuted by its group's permutation."""
    for axis in sorted({r.axis for r in refs}):
        index = torch.arange(t.shape[axis], device=t.device)
        for r in refs:
            if r.axis == axis and r is not skip:
                index[r.offset : r.offset + r.size] = r.offset + perms[r.group].to(t.device)
        t = t.index_select(axis, index)
    return t


def permute_state(state: dict[str, torch.Tensor], spec: PermSpec, perms: dict) -> dict[str, torch.Tensor]:
    """A state dict with channel ``i`` of every group taken from channel ``perms[group][i]``."""
    by_key = refs_by_key(spec)
    return {k: permuted_tensor(v, by_key[k], perms) if k in by_key else v for k, v in state.items()}


def apply_permutation(model: nn.Module, spec: PermSpec, perms: dict) -> nn.Module:
    """A permuted copy of ``model``; it computes the same function."""
    permuted = copy.deepcopy(model)
    permuted.load_state_dict(permute_state(model.state_dict(), spec, perms))
    return permuted

