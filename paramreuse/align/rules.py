"""One rule per kind of graph operation: how it moves channels, and which axes of which weights it binds.

Convolutions and linear layers start new spaces on their outputs; normalisation layers,
activations, pooling, reshapes, permutes and flattens carry them on (a flatten turns channels
into strided positions of the features); additions and products merge them; concatenation
lays them side by side; grouped convolutions and group norms need their channels cut into
their groups (asked of the next pass). A torch.nn layer without a rule is probed: if permuting
its input channels and its per-channel parameters permutes its output alike, it carries them.
Anything else fixes the channels it touches, with the reason.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import TensorMetadata

from paramreuse.align.channels import (
    Layout,
    ParamRef,
    Piece,
    Spaces,
    Static,
    Value,
    cut_at,
    merge,
    reshaped,
    shape_of,
    unknown,
)  # fmt: skip
from paramreuse.align.probes import probe, probe_function

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid,
    nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.RReLU, nn.Identity, nn.modules.dropout._DropoutNd,
)  # fmt: skip
_SPATIAL_MODULES = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd, nn.modules.pooling._LPPoolNd, nn.Upsample,
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd, nn.modules.padding._ReplicationPadNd,
    nn.ZeroPad2d,
)  # fmt: skip
_POINTWISE_FUNCS = {
    torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.exp, torch.abs, torch.neg, torch.sqrt, torch.rsqrt,
    torch.clamp, torch.square, F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.celu, F.selu, F.hardswish,
    F.hardsigmoid, F.hardtanh, F.mish, F.softplus, F.sigmoid, F.tanh, F.dropout, F.dropout2d, F.threshold,
    operator.add, operator.iadd, operator.mul, operator.imul, operator.sub, operator.isub, operator.truediv,
    operator.neg, torch.add, torch.mul, torch.sub, torch.div, torch.maximum, torch.minimum, torch.where,
}  # fmt: skip
_POINTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "exp", "abs", "neg", "sqrt", "rsqrt", "clamp",
    "clamp_", "clamp_min", "pow", "contiguous", "clone", "float", "double", "half", "to", "type_as", "detach",
    "add", "add_", "mul", "mul_", "sub", "sub_", "div", "div_", "square",
}  # fmt: skip
_SPATIAL_FUNCS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool2d, F.interpolate, F.upsample, F.pad,
}  # fmt: skip
_RESHAPES = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "flatten", "view", "reshape", "squeeze",
             "unsqueeze"}  # fmt: skip
_PERMUTES = {torch.permute, torch.transpose, "permute", "transpose"}
_REDUCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin"}
_CATS = {torch.cat, torch.concat, torch.concatenate}


# -- layers ----------------------------------------------------------------------------------------
def _input(sp: Spaces, node: fx.Node, values: dict, axis: int) -> Value:
    """The node's first input if its channels sit on ``axis``; otherwise they are fixed here."""
    x = values.get(node.args[0])
    if isinstance(x, Layout) and x.axis != axis:
        sp.fix(x, f"{node.target} reads its channels on another axis")
        return Static(f"{node.target} reads its channels on another axis")
    return x if isinstance(x, (Layout, Static)) else Static("unknown input")


def conv(sp: Spaces, node: fx.Node, m: nn.modules.conv._ConvNd, values: dict) -> Value:
    key, x = f"{node.target}.weight", _input(sp, node, values, 1)
    in_axis, out_axis = (0, 1) if m.transposed else (1, 0)
    if m.groups > 1 and m.groups == m.in_channels:
        out = _depthwise(sp, key, m, x)
    elif m.groups > 1:
        out = _grouped(sp, node, m, x)
    else:
        if isinstance(x, Layout):
            sp.bind(key, in_axis, x.pieces)
        else:
            sp.bind_fixed(key, in_axis, m.in_channels, x)
        out = sp.layer_pieces(node.target, m.out_channels)
        sp.bind(key, out_axis, out)
    if m.bias is not None:
        sp.bind(f"{node.target}.bias", 0, out)
    return Layout(1, out)


def _depthwise(sp: Spaces, key: str, m, x: Value) -> tuple[Piece, ...]:
    """Each input channel has its own ``mult`` filters: output channel ``c * mult + j`` follows channel ``c``."""
    mult = m.out_channels // m.in_channels
    if not isinstance(x, Layout):
        out = sp.fixed_pieces(m.out_channels, x.reason, x.natural)
        sp.bind(key, 0, out)
        return out
    out = tuple(Piece(p.space, p.size, p.offset * mult, p.inner * mult, p.outer, p.stride * mult) for p in x.pieces)
    sp.bind(key, 0, x.pieces if m.transposed else out)
    return out


def _grouped(sp: Spaces, node: fx.Node, m, x: Value) -> tuple[Piece, ...]:
    """Channels move within their group only: each group's slice of the weight gets its own refs."""
    key, g = f"{node.target}.weight", m.groups
    in_size, out_size = m.in_channels // g, m.out_channels // g
    out = sp.layer_pieces(node.target, m.out_channels, range(0, m.out_channels, out_size))
    if isinstance(x, Layout) and not (
        all(p.plain for p in x.pieces) and cut_at(sp, x.pieces, set(range(0, m.in_channels, in_size)))
    ):
        sp.fix(x, "grouped convolution: its input channels are not cut into its groups")
        x = Static("grouped convolution: its input channels are not cut into its groups")
    if not isinstance(x, Layout):  # fixed input channels: one fixed slice per group
        spaces = [sp.fixed_pieces(in_size, x.reason, x.natural)[0].space for _ in range(g)]
        x = Layout(1, tuple(Piece(s, in_size, b * in_size) for b, s in enumerate(spaces)))
    # Axis 0 is (out or in) channels in whole; axis 1 holds one group's channels, per block of axis 0.
    rows, cols = (x.pieces, out) if m.transposed else (out, x.pieces)
    row_size, col_size = (in_size, out_size) if m.transposed else (out_size, in_size)
    sp.bind(key, 0, rows)
    for p in cols:
        block = p.offset // col_size
        sp.bind(key, 1, (p,), block * col_size, (0, block * row_size, row_size))
    return out


def linear(sp: Spaces, node: fx.Node, m: nn.Linear, values: dict) -> Value:
    shape = shape_of(node.args[0])
    x = _input(sp, node, values, len(shape) - 1 if shape else -1)
    key = f"{node.target}.weight"
    if isinstance(x, Layout):
        sp.bind(key, 1, x.pieces)
    else:
        sp.bind_fixed(key, 1, m.in_features, x)
    out = sp.layer_pieces(node.target, m.out_features)
    sp.bind(key, 0, out)
    if m.bias is not None:
        sp.bind(f"{node.target}.bias", 0, out)
    return Layout(len(shape_of(node)) - 1, out)


def _bind_affine(sp: Spaces, name: str, m: nn.Module, pieces, attrs=("weight", "bias", "running_mean", "running_var")):
    for attr in attrs:
        if getattr(m, attr, None) is not None:
            sp.bind(f"{name}.{attr}", 0, pieces)


def norm(sp: Spaces, node: fx.Node, m: nn.Module, values: dict) -> Value:
    """Exact torch norms: per-channel statistics (batch, instance), per-group (group) or per-position (layer)."""
    x = values.get(node.args[0])
    if not isinstance(x, Layout):
        return x if isinstance(x, Static) else Static("unknown input")
    if isinstance(m, nn.LayerNorm):
        return _layer_norm(sp, node, m, x)
    if x.axis != 1:
        return unknown(sp, node, values, f"{node.target} normalises axis 1 but the channels are on another axis")
    if isinstance(m, nn.GroupNorm) and 1 < m.num_groups < m.num_channels:
        size = m.num_channels // m.num_groups
        if not (all(p.plain for p in x.pieces) and cut_at(sp, x.pieces, set(range(0, m.num_channels, size)))):
            return unknown(sp, node, values, f"group norm {node.target}: its channels are not cut into its groups")
    _bind_affine(sp, node.target, m, x.pieces)
    return x


def _layer_norm(sp: Spaces, node: fx.Node, m: nn.LayerNorm, x: Layout) -> Value:
    first = len(shape_of(node)) - len(m.normalized_shape)
    if x.axis < first:  # normalises each channel over positions; its affine acts on positions only
        return x
    for attr in ("weight", "bias"):  # statistics over all channels do not depend on their order
        if getattr(m, attr, None) is not None:
            sp.bind(f"{node.target}.{attr}", x.axis - first, x.pieces)
    return x


# -- functions ---------------------------------------------------------------------------------------
def elementwise(sp: Spaces, node: fx.Node, values: dict) -> Value:
    """Outputs line up with every full-width input (right-aligned broadcast): merge their channels."""
    out = shape_of(node)
    if out is None:
        return unknown(sp, node, values, f"operation {node.name} gives no tensor")
    layouts, params, statics = [], [], []
    for n in node.all_input_nodes:
        v, shape = values.get(n), shape_of(n)
        if isinstance(v, Layout) and shape is not None and shape[v.axis] > 1:
            layouts.append((v, v.axis + len(out) - len(shape)))
        elif isinstance(v, ParamRef):
            params.append((v, len(out) - v.ndim))
        elif isinstance(v, Static) and shape is not None and shape != ():
            statics.append((v, shape))
    if not layouts:
        if statics or params:
            return statics[0][0] if statics else _params_only(node)
        return Static(f"operation {node.name} has no hidden channels", natural=True)
    axes = {a for _, a in layouts}
    merged = merge(sp, [Layout(a, lay.pieces) for lay, a in layouts]) if len(axes) == 1 else None
    if merged is None:
        return unknown(sp, node, values, f"operation {node.name} combines channels that do not line up")
    axis = merged.axis
    for v, shape in statics:  # an unpermuted tensor that varies along the channels pins them
        lead = len(out) - len(shape)
        if axis - lead >= 0 and shape[axis - lead] > 1:
            return unknown(sp, node, values, f"operation {node.name} combines channels with a fixed tensor ({v.reason})")
    for p, lead in params:
        if p.dims is None:
            return unknown(sp, node, values, f"{p.key} is reshaped in a way that is not tracked")
        for view_axis, stored_axis, size in p.dims:
            if view_axis + lead == axis:
                sp.bind(p.key, stored_axis, merged.pieces)
    return merged


def _params_only(node: fx.Node) -> Value:
    # Parameters combined with each other (e.g. a scale computed from two weights) are not tracked.
    return Static(f"operation {node.name} combines parameters")


def prelu(sp: Spaces, node: fx.Node, values: dict) -> Value:
    """``F.prelu(x, weight)``: the weight is per channel on axis 1 (not right-aligned)."""
    x, w = values.get(node.args[0]), values.get(node.args[1])
    if not isinstance(x, Layout) or x.axis != 1 or not isinstance(w, ParamRef) or w.dims is None:
        return unknown(sp, node, values, f"prelu {node.name} is not modelled")
    for _, stored_axis, _ in w.dims:
        sp.bind(w.key, stored_axis, x.pieces)
    return x


def spatial(sp: Spaces, node: fx.Node, values: dict) -> Value:
    x = values.get(node.args[0])
    if isinstance(x, Layout) and x.axis != 1:
        return unknown(sp, node, values, f"operation {node.name} works on the axes that hold channels")
    return x if isinstance(x, (Layout, Static)) else unknown(sp, node, values, f"operation {node.name}: unknown input")


def reshape(sp: Spaces, node: fx.Node, values: dict) -> Value:
    x, src, dst = values.get(node.args[0]), shape_of(node.args[0]), shape_of(node)
    if isinstance(x, Static) or src is None or dst is None:
        return x if isinstance(x, Static) else unknown(sp, node, values, f"operation {node.name} has no shape")
    if isinstance(x, ParamRef):
        return _reshaped_param(x, dst)
    out = reshaped(x, src, dst) if isinstance(x, Layout) else None
    return out or unknown(sp, node, values, f"reshape {node.name} splits the channel axis")


def _reshaped_param(p: ParamRef, dst: tuple) -> ParamRef:
    """Squeezes and unsqueezes keep a parameter's non-1 axes in order; anything else is not tracked."""
    big = [a for a, s in enumerate(dst) if s > 1]
    if p.dims is None or [s for _, _, s in p.dims] != [dst[a] for a in big]:
        return ParamRef(p.key, len(dst), None)
    return ParamRef(p.key, len(dst), tuple((a, stored, s) for a, (_, stored, s) in zip(big, p.dims)))


def permute(sp: Spaces, node: fx.Node, values: dict) -> Value:
    x, shape = values.get(node.args[0]), shape_of(node.args[0])
    if isinstance(x, Static) or shape is None:
        return x if isinstance(x, Static) else unknown(sp, node, values, f"operation {node.name} has no shape")
    order = _axis_order(node, len(shape))
    if isinstance(x, ParamRef):
        dims = None if x.dims is None else tuple((order.index(a), s, n) for a, s, n in x.dims)
        return ParamRef(x.key, x.ndim, dims)
    return Layout(order.index(x.axis), x.pieces) if isinstance(x, Layout) else None


def _axis_order(node: fx.Node, ndim: int) -> list[int]:
    """Source axis of every output axis."""
    name = node.target if isinstance(node.target, str) else node.target.__name__
    rest = list(node.args[1:]) or list(node.kwargs.values())
    if name == "transpose":
        a, b = (d % ndim for d in rest[:2])
        order = list(range(ndim))
        order[a], order[b] = order[b], order[a]
        return order
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
    return [d % ndim for d in dims]


def reduction(sp: Spaces, node: fx.Node, values: dict) -> Value:
    x, src = values.get(node.args[0]), shape_of(node.args[0])
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if not isinstance(x, Layout) or src is None:
        return x if isinstance(x, Static) else unknown(sp, node, values, f"reduction {node.name} of an untracked tensor")
    dims = set(range(len(src))) if dims is None else {d % len(src) for d in ((dims,) if isinstance(dims, int) else dims)}
    if x.axis in dims:  # a sum over all channels is the same in any channel order
        return Static(f"reduced over channels ({node.name})", natural=True)
    return Layout(x.axis if keep else x.axis - sum(d < x.axis for d in dims), x.pieces)


def cat(sp: Spaces, node: fx.Node, values: dict) -> Value:
    tensors = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    out = shape_of(node)
    dim %= len(out)
    vals = [values.get(n) for n in tensors]
    if all(isinstance(v, Layout) and v.axis != dim for v in vals):
        return elementwise(sp, node, values)  # joined along positions: channels must agree
    pieces, offset = [], 0
    for n, v in zip(tensors, vals):
        width = shape_of(n)[dim]
        if isinstance(v, Layout) and v.axis == dim:
            pieces += [Piece(p.space, p.size, p.offset + offset, p.inner, p.outer, p.period) for p in v.pieces]
        elif isinstance(v, Static):
            pieces += [Piece(p.space, p.size, offset) for p in sp.fixed_pieces(width, v.reason, v.natural)]
        else:
            return unknown(sp, node, values, f"concatenation {node.name} joins channels on different axes")
        offset += width
    return Layout(dim, tuple(pieces))


def stack(sp: Spaces, node: fx.Node, values: dict) -> Value:
    """``torch.stack`` along a new axis: the stacked tensors' channels line up, one axis further on if after it."""
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    dim %= len(shape_of(node))
    vals = [values.get(n) for n in node.args[0]]
    if not all(isinstance(v, Layout) for v in vals) or (merged := merge(sp, vals)) is None:
        return unknown(sp, node, values, f"stack {node.name} of channels that do not line up")
    return Layout(merged.axis + (dim <= merged.axis), merged.pieces)


def getitem(sp: Spaces, node: fx.Node, values: dict) -> Value:
    x = values.get(node.args[0])
    if isinstance(x, Static):
        return x
    if "tensor_meta" not in node.meta or not isinstance(node.meta["tensor_meta"], TensorMetadata):
        return None
    return unknown(sp, node, values, f"indexing {node.name} is not modelled")


# -- dispatch ----------------------------------------------------------------------------------------
def module_value(sp: Spaces, node: fx.Node, m: nn.Module, values: dict) -> Value:
    exact_norm = type(m) in (nn.GroupNorm, nn.LayerNorm) or type(m).__module__.startswith("torch.nn.modules") and (
        isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
    )
    if isinstance(m, nn.modules.conv._ConvNd):
        return conv(sp, node, m, values)
    if isinstance(m, nn.Linear):
        return linear(sp, node, m, values)
    if exact_norm:
        return norm(sp, node, m, values)
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return reshape(sp, node, values)
    if isinstance(m, _POINTWISE_MODULES) and len(node.all_input_nodes) == 1:
        return elementwise(sp, node, values)
    if isinstance(m, _SPATIAL_MODULES):
        return spatial(sp, node, values)
    return probe(sp, node, m, values)


def function_value(sp: Spaces, node: fx.Node, gm: fx.GraphModule, values: dict) -> Value:
    target = node.target
    method = node.op == "call_method"
    if target is operator.getitem:
        return getitem(sp, node, values)
    if "tensor_meta" not in node.meta:
        return None  # shapes, sizes, asserts: reading a shape does not constrain channels
    if target in _CATS:
        return cat(sp, node, values)
    if target in _RESHAPES:
        return reshape(sp, node, values)
    if target in _PERMUTES:
        return permute(sp, node, values)
    if target in _REDUCTIONS:
        return reduction(sp, node, values)
    if target is F.prelu or target is torch.prelu:
        return prelu(sp, node, values)
    if target in _SPATIAL_FUNCS:
        return spatial(sp, node, values)
    if (not method and target in _POINTWISE_FUNCS) or (method and target in _POINTWISE_METHODS):
        return elementwise(sp, node, values)
    if target is torch.stack:
        return stack(sp, node, values)
    return probe_function(sp, node, gm, values)
