"""Channel spaces: how the channels of every tensor flow through a traced graph.

A *space* is a set of hidden channels that must be permuted together. Each tensor value of
the graph is described by a :class:`Layout` (which axis carries channels, and which positions
of that axis hold which space, possibly strided after a flatten), a :class:`Static` (a tensor
none of whose axes may be permuted, and why) or a :class:`ParamRef` (a parameter read by the
forward, whose axes are bound where it meets channels). Union-find merges spaces that must
move together (residual additions, shared weights); a space that meets something the rules
do not model is *fixed* with a reason, which only loses alignment freedom, never correctness.
The rules for each kind of operation live in :mod:`paramreuse.align.rules`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import fx
from torch.fx.passes.shape_prop import TensorMetadata

NETWORK_INPUT = "network input"
NETWORK_OUTPUT = "network output"


@dataclass(frozen=True)
class Piece:
    """Channels ``0..size-1`` of ``space`` sit at ``offset + o * period + c * inner + i`` of the axis.

    ``o < outer`` and ``i < inner``; ``period`` 0 means ``size * inner`` (one contiguous block).
    A plain piece (``inner == outer == 1``) is a slice; a channel-first flatten makes ``inner`` the
    spatial size, a channel-last flatten makes ``outer`` the spatial size.
    """

    space: int
    size: int
    offset: int = 0
    inner: int = 1
    outer: int = 1
    period: int = 0

    @property
    def plain(self) -> bool:
        return self.inner == 1 and self.outer == 1

    @property
    def stride(self) -> int:
        return self.period or self.size * self.inner

    def shape(self) -> tuple:
        """Everything but the space, to compare two layouts' structure."""
        return (self.size, self.offset, self.inner, self.outer, self.stride)


@dataclass(frozen=True)
class Layout:
    """A tensor whose axis ``axis`` carries the channels of ``pieces``."""

    axis: int
    pieces: tuple[Piece, ...]


@dataclass(frozen=True)
class Static:
    """A tensor none of whose axes is permuted; ``natural`` when no hidden channels were lost (input, output)."""

    reason: str
    natural: bool = False


@dataclass(frozen=True)
class ParamRef:
    """A state-dict tensor read by the forward; ``dims`` maps its view's non-1 axes to the stored axes."""

    key: str
    ndim: int
    dims: tuple[tuple[int, int, int], ...] | None  # (view axis, stored axis, size); None: reshaped beyond tracking


Value = Layout | Static | ParamRef | None


def positions(offset: int, size: int, inner: int = 1, outer: int = 1, period: int = 0) -> torch.Tensor:
    """Axis positions of a piece as an ``(outer, size, inner)`` index tensor."""
    period = period or size * inner
    o = torch.arange(outer).view(-1, 1, 1) * period
    c = torch.arange(size).view(1, -1, 1) * inner
    return offset + o + c + torch.arange(inner).view(1, 1, -1)


class Spaces:
    """Union-find over channel spaces, with the reasons a space is fixed and the axes bound to each."""

    def __init__(self, splits: dict[str, frozenset[int]] | None = None):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.reasons: list[list[tuple[str, bool]]] = []
        self.origin: list[tuple[str, int, int]] = []  # (layer that made it, start in that layer, layer width)
        self.bindings: list[tuple[int, tuple]] = []
        self.requests: list[tuple[int, int]] = []
        self.splits = splits or {}

    # -- spaces ------------------------------------------------------------------------------------
    def _new(self, size: int, origin: tuple[str, int, int] = ("", 0, 0)) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.reasons.append([])
        self.origin.append(origin)
        return len(self.parent) - 1

    def fixed_pieces(self, size: int, reason: str, natural: bool = False) -> tuple[Piece, ...]:
        space = self._new(size)
        self.reasons[space].append((reason, natural))
        return (Piece(space, size),)

    def layer_pieces(self, name: str, size: int, boundaries=()) -> tuple[Piece, ...]:
        """Fresh free spaces for the ``size`` output channels of layer ``name``, cut where asked."""
        cuts = sorted({0, size, *boundaries, *self.splits.get(name, ())} & set(range(size + 1)))
        return tuple(Piece(self._new(b - a, (name, a, size)), b - a, a) for a, b in pairwise(cuts))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> int:
        a, b = sorted((self.find(a), self.find(b)))
        if a != b:
            self.parent[b] = a
            self.reasons[a] += self.reasons[b]
            if self.size[a] != self.size[b]:
                self.reasons[a].append(("merged with channels of another width", False))
        return a

    def fixed(self, i: int) -> bool:
        return bool(self.reasons[self.find(i)])

    def fix(self, value: Value, reason: str, natural: bool = False) -> None:
        if isinstance(value, Layout):
            for piece in value.pieces:
                self.reasons[self.find(piece.space)].append((reason, natural))

    def request(self, space: int, boundary: int) -> None:
        """Ask the next pass to cut ``space`` at ``boundary`` (a grouped layer needs it in pieces)."""
        self.requests.append((space, boundary))

    def requested_splits(self) -> dict[str, frozenset[int]]:
        """Cuts asked for in this pass, moved to every layer whose channels joined the space."""
        members = defaultdict(list)
        for i in range(len(self.parent)):
            if self.origin[i][0]:
                members[self.find(i)].append(i)
        cuts = defaultdict(set)
        for space, boundary in self.requests:
            for i in members[self.find(space)]:
                name, start, _ = self.origin[i]
                cuts[name].add(start + boundary)
        return {name: frozenset(c) for name, c in cuts.items()}

    # -- bindings ----------------------------------------------------------------------------------
    def bind(self, key: str, axis: int, pieces: tuple[Piece, ...], shift: int = 0, within=None) -> None:
        """Axis ``axis`` of ``key`` holds ``pieces`` (moved by ``shift``; only the rows ``within``)."""
        for p in pieces:
            ref = (key, axis, p.offset - shift, p.size, p.inner, p.outer, p.period, within)
            self.bindings.append((p.space, ref))

    def bind_fixed(self, key: str, axis: int, size: int, value: Value) -> None:
        reason, natural = (value.reason, value.natural) if isinstance(value, Static) else ("unknown input", False)
        self.bind(key, axis, self.fixed_pieces(size, reason, natural))


def boundaries(pieces: tuple[Piece, ...]) -> set[int]:
    return {b for p in pieces for b in (p.offset, p.offset + p.size)}


def cut_at(sp: Spaces, pieces: tuple[Piece, ...], cuts: set[int]) -> bool:
    """Request cuts of plain pieces at ``cuts``; True when the pieces already have them all."""
    ok = True
    for p in pieces:
        for b in cuts:
            if p.offset < b < p.offset + p.size:
                sp.request(p.space, b - p.offset)
                ok = False
    return ok


def merge(sp: Spaces, layouts: list[Layout]) -> Layout | None:
    """One layout for tensors whose channels line up element by element; None when they cannot."""
    first = layouts[0]
    if any(lay.axis != first.axis for lay in layouts):
        return None
    structures = {tuple(p.shape() for p in lay.pieces) for lay in layouts}
    if len(structures) > 1:
        if all(p.plain for lay in layouts for p in lay.pieces):
            cuts = set().union(*(boundaries(lay.pieces) for lay in layouts))
            for lay in layouts:
                cut_at(sp, lay.pieces, cuts)
        return None
    for lay in layouts[1:]:
        for a, b in zip(first.pieces, lay.pieces):
            sp.union(a.space, b.space)
    return first


def reshaped(layout: Layout, src: tuple[int, ...], dst: tuple[int, ...]) -> Layout | None:
    """The layout after a row-major reshape from ``src`` to ``dst``; None when channels get split.

    The channel of flat element ``f`` is ``(f // post) % L``. It is a function of the index along
    one axis ``B`` of ``dst`` alone when the elements after ``B`` divide ``post`` and the block of
    ``B`` spans whole channel periods; then channel ``c`` sits at ``c * inner`` (+ repeats).
    """
    length, pre, post = src[layout.axis], _prod(src[: layout.axis]), _prod(src[layout.axis + 1 :])
    valid = [b for b in range(len(dst)) if post % _prod(dst[b + 1 :]) == 0 and _prod(dst[b:]) % (post * length) == 0]
    if not valid:
        return None
    # A one-channel axis fits anywhere: prefer the axis with the same elements before it.
    b = next((b for b in valid if _prod(dst[:b]) == pre), valid[0])
    inner = post // _prod(dst[b + 1 :])
    repeats = _prod(dst[b:]) // (post * length)
    pieces = [_stretched(p, inner, repeats, length) for p in layout.pieces]
    return None if None in pieces else Layout(b, tuple(pieces))


def _stretched(p: Piece, inner: int, repeats: int, length: int) -> Piece | None:
    if inner == 1 and repeats == 1:
        return p
    if p.outer == 1:
        return Piece(p.space, p.size, p.offset * inner, p.inner * inner, repeats, length * inner)
    if repeats == 1 or p.outer * p.stride == length:
        return Piece(p.space, p.size, p.offset * inner, p.inner * inner, p.outer * repeats, p.stride * inner)
    return None


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def shape_of(node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def describe(node: fx.Node, gm: fx.GraphModule) -> str:
    if node.op == "call_module":
        return f"{type(gm.get_submodule(node.target)).__name__} layer {node.target}"
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
    return f"operation {name} ({node.name})"


def unknown(sp: Spaces, node: fx.Node, values: dict, reason: str) -> Value:
    """Fix every channel the node reads; its output is not permuted."""
    for n in node.all_input_nodes:
        sp.fix(values.get(n), reason)
    return Static(reason) if "tensor_meta" in node.meta else None


def not_modelled(sp: Spaces, node: fx.Node, gm: fx.GraphModule, values: dict) -> Value:
    return unknown(sp, node, values, f"{describe(node, gm)} is not modelled")
