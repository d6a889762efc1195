"""Permutation specs: which tensor axes of a model index the same channels, read from its graph.

The channels of a hidden layer can be permuted without changing the network's function, as
long as every tensor axis that indexes those channels is permuted alike. Which axes move
together (a *permutation group*) is read from the torch.fx graph by the rules of
:mod:`paramreuse.align.rules`. The network input, the outputs and anything the rules do not
model are never permuted; every axis left in place is listed with the reason (a note). The
spec is then checked on the model itself: a group whose permutation changes the output is
dropped and noted, so a spec never yields a wrong permutation. Applying a permutation to a
state dict lives here too.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.utils._pytree import tree_leaves

from paramreuse.align.channels import Layout, Spaces, positions
from paramreuse.align.flow import settled_flow
from paramreuse.errors import ParamreuseError
from paramreuse.models.units import trace

MISREAD = "permuting these channels changed the network's output (an operation the rules misread)"


class AlignmentError(ParamreuseError):
    """Alignment that cannot be done as asked (untraceable model, missing data)."""


@dataclass(frozen=True)
class AxisRef:
    """Channels of ``group`` on axis ``axis`` of state-dict entry ``key``.

    Channel ``c`` sits at positions ``offset + o * period + c * inner + i`` (``o < outer``,
    ``i < inner``; ``period`` 0 is ``size * inner``): a plain slice by default, strided after a
    flatten. ``within = (axis, start, length)`` limits the ref to those rows of another axis (one
    group of a grouped convolution).
    """

    group: str
    key: str
    axis: int
    offset: int
    size: int
    inner: int = 1
    outer: int = 1
    period: int = 0
    within: tuple[int, int, int] | None = None

    def positions(self) -> torch.Tensor:
        """The axis positions as an ``(outer, size, inner)`` index tensor."""
        return positions(self.offset, self.size, self.inner, self.outer, self.period)


@dataclass(frozen=True)
class PermGroup:
    """Channels that are permuted together, and every tensor axis that indexes them."""

    name: str
    size: int
    refs: tuple[AxisRef, ...]


@dataclass(frozen=True)
class AxisNote:
    """An axis (or slice of one) left in place, and why; ``natural`` when it holds no hidden channels."""

    key: str
    axis: int
    reason: str
    natural: bool


@dataclass(frozen=True)
class PermSpec:
    """All permutation groups of a model, the graph nodes that carry them, and the axes left in place.

    ``probes`` are ``(node, group, axis, offset)``: the output of graph node ``node`` holds the
    group's channels at ``offset`` of axis ``axis``.
    """

    groups: tuple[PermGroup, ...]
    probes: tuple[tuple[str, str, int, int], ...]
    notes: tuple[AxisNote, ...] = ()

    def group_of(self, key: str, axis: int = 0) -> str | None:
        """The group that permutes ``axis`` of ``key`` (its first slice), or None."""
        refs = [ref for group in self.groups for ref in group.refs if ref.key == key and ref.axis == axis]
        return min(refs, key=lambda r: (r.within or (0, 0, 0), r.offset)).group if refs else None

    def notes_of(self, key: str, axis: int) -> tuple[AxisNote, ...]:
        return tuple(n for n in self.notes if n.key == key and n.axis == axis)


def _example_input(model: nn.Module) -> torch.Tensor:
    param = next(model.parameters())
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return torch.zeros(2, m.in_channels, *[64] * len(m.kernel_size), dtype=param.dtype, device=param.device)
        if isinstance(m, nn.Linear):
            return torch.zeros(2, m.in_features, dtype=param.dtype, device=param.device)
    raise AlignmentError(f"{type(model).__name__} has no convolution or linear layer to align")


class _EvalMode:
    """Eval mode inside the block (tracing and shapes see the inference graph); modes restored after."""

    def __init__(self, *models: nn.Module):
        self.modes = {m: m.training for model in models for m in model.modules()}

    def __enter__(self):
        for m in self.modes:
            m.training = False

    def __exit__(self, *exc):
        for m, mode in self.modes.items():
            m.training = mode


def _traced_with_shapes(model: nn.Module, example: torch.Tensor) -> fx.GraphModule:
    with _EvalMode(model):
        try:
            gm = trace(model)
        except ParamreuseError as exc:
            raise AlignmentError(f"{exc}; permutation alignment needs the graph, use align='none'") from None
        _propagate_shapes(gm, example.to(next(model.parameters()).device), type(model).__name__)
    return gm


def _propagate_shapes(gm: fx.GraphModule, example: torch.Tensor, name: str) -> None:
    """Record every node's output shape; an input the model cannot take is one line, never a traceback."""
    try:
        # ShapeProp prints the traceback of a failing node itself before it re-raises
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm).propagate(example)
    except Exception as exc:  # noqa: BLE001 - a wrong example input surfaces as any kind of error
        cause = exc.__cause__ or exc  # ShapeProp wraps the op's own error in "ShapeProp error for: node=..."
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        size = "x".join(map(str, example.shape[1:]))
        raise AlignmentError(
            f"cannot trace {name} on {size} inputs ({first}); give the size it was trained on "
            f"(--input-size N, or --data with its images; example_input= in Python)"
        ) from None


def _unite_bindings(sp: Spaces) -> dict[tuple, int]:
    """Space of every bound ref; a ref bound twice merges its spaces (shared weights)."""
    first: dict[tuple, int] = {}
    for space, ref in sp.bindings:
        first[ref] = sp.union(first[ref], space) if ref in first else space
    by_axis = defaultdict(list)
    for ref in first:
        by_axis[(ref[0], ref[1], ref[7])].append(ref)
    for refs in by_axis.values():  # two different refs on the same positions cannot both be honoured
        owner: dict[int, tuple] = {}
        for ref in refs:
            for pos in positions(*ref[2:7]).reshape(-1).tolist():
                if pos in owner and owner[pos] != ref:
                    for r in (ref, owner[pos]):
                        sp.reasons[sp.find(first[r])].append(("bound to overlapping slices of one axis", False))
                owner[pos] = ref
    return first


def _reason(sp: Spaces, root: int) -> tuple[str, bool]:
    reasons = sp.reasons[root]
    return next(((r, n) for r, n in reasons if not n), reasons[0])


def _group_names(sp: Spaces, roots: list[int]) -> dict[int, str]:
    names: dict[int, str] = {}
    for k, root in enumerate(sorted(roots)):
        layer, start, width = sp.origin[root]
        name = layer if (start, sp.size[root]) == (0, width) else f"{layer}[{start}:{start + sp.size[root]}]"
        names[root] = name if name and name not in names.values() else f"{name or 'group'}#{k}"
    return names


def _spec_from_flow(sp: Spaces, values: dict) -> PermSpec:
    first = _unite_bindings(sp)
    by_root: dict[int, list] = defaultdict(list)
    notes = []
    for ref, space in first.items():
        root = sp.find(space)
        if sp.reasons[root]:
            notes.append(AxisNote(ref[0], ref[1], *_reason(sp, root)))
        else:
            by_root[root].append(ref)
    names = _group_names(sp, list(by_root))
    groups = tuple(
        PermGroup(names[root], sp.size[root], tuple(AxisRef(names[root], *ref) for ref in refs))
        for root, refs in sorted(by_root.items())
    )
    probes = tuple(
        (node.name, names[sp.find(p.space)], value.axis, p.offset)
        for node, value in values.items()
        if isinstance(value, Layout) and node.op != "output"
        for p in value.pieces
        if p.plain and sp.find(p.space) in names
    )
    return PermSpec(groups, probes, tuple(dict.fromkeys(notes)))


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return [t.double() for t in tree_leaves(model(x)) if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _misread_groups(model: nn.Module, spec: PermSpec, x: torch.Tensor) -> set[str]:
    """Groups whose random permutation changes the model's output on ``x`` (none when the rules hold)."""
    if not spec.groups:
        return set()
    state = model.state_dict()
    work = copy.deepcopy(model)

    def keeps_function(groups) -> bool:
        sub = PermSpec(tuple(groups), ())
        work.load_state_dict(permute_state(state, sub, random_permutation(sub, seed=1)))
        got = _outputs(work, x)
        return all(torch.allclose(a, b, rtol=0, atol=1e-3 * scale + 1e-12) for a, b in zip(got, expected))

    with _EvalMode(work):
        expected = _outputs(work, x)
        scale = max((t.abs().max().item() for t in expected if t.numel()), default=0.0)
        if keeps_function(spec.groups):
            return set()
        bad = {g.name for g in spec.groups if not keeps_function([g])}
    return bad or {g.name for g in spec.groups}


def _without(spec: PermSpec, bad: set[str]) -> PermSpec:
    dropped = tuple(AxisNote(r.key, r.axis, MISREAD, False) for g in spec.groups if g.name in bad for r in g.refs)
    return PermSpec(
        tuple(g for g in spec.groups if g.name not in bad),
        tuple(p for p in spec.probes if p[1] not in bad),
        spec.notes + tuple(dict.fromkeys(dropped)),
    )


def permutation_spec(model: nn.Module, example_input: torch.Tensor | None = None, verify: bool = True) -> PermSpec:
    """The permutation groups of ``model``, read from its traced graph.

    Args:
        model: the network; it is run (eval mode, no grad) to learn tensor shapes.
        example_input: a batch the model accepts; default zeros of 2 x C x 64 x 64 for the first conv.
        verify: check every group on the model itself (random input of the example's shape) and
            drop the groups whose permutation changes the output.

    Raises:
        AlignmentError: the model cannot be traced or run on the example input.
    """
    example = example_input if example_input is not None else _example_input(model)
    gm = _traced_with_shapes(model, example)
    sp, values = settled_flow(gm, set(model.state_dict()))
    spec = _spec_from_flow(sp, values)
    if verify:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(example.shape, generator=g).to(example) if example.is_floating_point() else example
        bad = _misread_groups(model, spec, x.to(next(model.parameters()).device))
        spec = _without(spec, bad) if bad else spec
    return spec


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
    """``t`` with the channels of every ref (except ``skip``) permuted by its group's permutation."""
    by_axis = defaultdict(list)
    for r in refs:
        if r is not skip:
            by_axis[(r.within, r.axis)].append(r)
    # Whole-axis refs first: grouped layers cut their channels by group, so blocks of rows stay in place.
    for (within, axis), rs in sorted(by_axis.items(), key=lambda kv: (kv[0][0] is not None, kv[0][0] or (), kv[0][1])):
        index = torch.arange(t.shape[axis])
        for r in rs:
            pos = r.positions()
            index[pos.reshape(-1)] = pos[:, perms[r.group].cpu(), :].reshape(-1)
        index = index.to(t.device)
        if within is None:
            t = t.index_select(axis, index)
        else:
            t = t.clone()
            block = t.narrow(*within)
            block.copy_(block.index_select(axis, index))
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

