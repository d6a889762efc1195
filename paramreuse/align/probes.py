"""Probes for layers and functions without a rule: do they carry channels?

A layer or a function of one tensor carries channels when permuting its input (and its
per-channel parameters) permutes its output alike. This is checked numerically on a float64
CPU copy with random values, so that a per-channel mix-up shows; anything that fails, or
cannot run, is not modelled and fixes the channels it touches.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

from paramreuse.align.channels import Layout, Spaces, Value, not_modelled, shape_of, unknown


def probe(sp: Spaces, node: fx.Node, m: nn.Module, values: dict) -> Value:
    """A layer without a rule carries channels if permuting input and per-channel tensors permutes its output."""
    x, shape = values.get(node.args[0]) if node.args else None, shape_of(node.args[0]) if node.args else None
    reason = f"{type(m).__name__} layer {node.target} is not modelled"
    if not isinstance(x, Layout) or len(node.all_input_nodes) != 1 or shape != shape_of(node):
        return unknown(sp, node, values, reason)
    length = shape[x.axis]
    tensors = dict(m.named_parameters()) | dict(m.named_buffers())
    per_channel = [k for k, t in tensors.items() if t.dim() == 1 and t.numel() == length and length > 1]
    if any(t.numel() > 1 and k not in per_channel for k, t in tensors.items()):
        return unknown(sp, node, values, reason)
    if not _equivariant(m, shape, x.axis, per_channel):
        return unknown(sp, node, values, f"{type(m).__name__} layer {node.target} mixes channels")
    for k in per_channel:
        sp.bind(f"{node.target}.{k}", 0, x.pieces)
    return x


def _equivariant(m: nn.Module, shape: tuple, axis: int, per_channel: list[str]) -> bool:
    g = torch.Generator().manual_seed(0)
    probe_m = copy.deepcopy(m).to("cpu", torch.float64).eval()
    # Distinct per-channel values, so that a per-channel mix-up shows in the output.
    state = {k: torch.rand(v.shape, generator=g, dtype=torch.float64) + 0.5 if k in per_channel else v
             for k, v in probe_m.state_dict().items()}  # fmt: skip
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    perm = torch.randperm(shape[axis], generator=g)
    try:
        with torch.no_grad():
            probe_m.load_state_dict(state)
            y = probe_m(x)
            probe_m.load_state_dict({k: v[perm] if k in per_channel else v for k, v in state.items()})
            y_perm = probe_m(x.index_select(axis, perm))
    except Exception:  # noqa: BLE001 - a layer that cannot run in float64 on CPU is simply not probed
        return False
    return isinstance(y, torch.Tensor) and torch.allclose(y_perm, y.index_select(axis, perm), rtol=1e-6, atol=1e-9)


def probe_function(sp: Spaces, node: fx.Node, gm: fx.GraphModule, values: dict) -> Value:
    """A function of one tensor and constants carries channels if permuting its input permutes its output."""
    x, inputs = (values.get(node.args[0]) if node.args else None), node.all_input_nodes
    shape = shape_of(node.args[0]) if node.args else None
    if not isinstance(x, Layout) or len(inputs) != 1 or inputs[0] is not node.args[0] or shape != shape_of(node):
        return not_modelled(sp, node, gm, values)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(shape, generator=g, dtype=torch.float64)
    perm = torch.randperm(shape[x.axis], generator=g)

    def run(t):
        args = (t, *node.args[1:])
        return getattr(t, node.target)(*args[1:], **node.kwargs) if node.op == "call_method" else node.target(*args, **node.kwargs)

    try:
        with torch.no_grad():
            y, y_perm = run(data), run(data.index_select(x.axis, perm))
        same = isinstance(y, torch.Tensor) and torch.allclose(y_perm, y.index_select(x.axis, perm), rtol=1e-6, atol=1e-9)
    except Exception:  # noqa: BLE001 - a function that cannot run on a float64 CPU tensor is not probed
        same = False
    return x if same else not_modelled(sp, node, gm, values)
