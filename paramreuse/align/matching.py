"""Permutation alignment: find the channel permutation of S that brings it closest to T.

Which axes may be permuted together comes from :mod:`paramreuse.align.specs`. Two ways to choose
the permutations, both solved with ``scipy.optimize.linear_sum_assignment``: weight matching
(coordinate descent over groups, maximising the inner product of S's and T's parameters) and
activation matching (channel correlations of S and T on given data).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import fx, nn

from paramreuse.align.specs import (
    AlignmentError,
    AxisRef,
    PermGroup,
    PermSpec,
    apply_permutation,
    permutation_spec,
    permuted_tensor,
    refs_by_key,
)  # fmt: skip
from paramreuse.models.units import Unit, pair_units, trace

METHODS = ("none", "weights", "activations")


def _cost(group: PermGroup, s: dict, t_rows: dict, by_key: dict, perms: dict, settled=None) -> np.ndarray:
    """cost[i, j]: inner product of T's channel i with S's channel j over the group's axes.

    With ``settled`` (the groups matched so far), only tensors whose other axes are all settled count.
    """
    cost = torch.zeros(group.size, group.size)
    for ref in group.refs:
        others = {r.group for r in by_key.get(ref.key, ())} - {group.name}
        if ref.key in s and (settled is None or others <= settled):
            ws = permuted_tensor(s[ref.key], by_key[ref.key], perms, skip=ref)
            cost += t_rows[ref] @ _rows(ws, ref).T
    return cost.numpy().astype(np.float64)


def _rows(t: torch.Tensor, ref: AxisRef) -> torch.Tensor:
    """The ref's channels of ``t`` as a matrix with one row per channel."""
    if ref.within is not None:
        t = t.narrow(*ref.within)
    index = ref.positions().permute(1, 0, 2).reshape(-1).to(t.device)
    return t.movedim(ref.axis, 0)[index].reshape(ref.size, -1)


def weight_matching(
    spec: PermSpec, source: dict, target: dict, seed: int = 0, max_iter: int = 100, tol: float = 1e-4
) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations of S that maximise the inner product with T's parameters (coordinate descent).

    Args:
        source, target: state dicts; only the entries given take part (pass parameters only).
        seed: order in which groups are visited after the first sweep. The first sweep goes in
            graph order and matches each group on the tensors whose other axes are already matched
            (its producer's kernel, its norm): with noise from unmatched successors, a layer and its
            successor can lock each other into a joint local optimum.

    Returns:
        The permutation of every group, and the number of sweeps made.
    """
    s = {k: v.detach().float().cpu() for k, v in source.items()}
    by_key = {k: refs for k, refs in refs_by_key(spec).items() if k in s}
    t_rows = {r: _rows(target[k].detach().float().cpu(), r) for k, refs in by_key.items() for r in refs}
    perms = {g.name: torch.arange(g.size) for g in spec.groups}
    neighbours = {
        g.name: {other.group for ref in g.refs for other in by_key.get(ref.key, []) if other is not ref}
        for g in spec.groups
    }
    dirty, rng, sweeps, settled = set(perms), np.random.default_rng(seed), 0, set()
    while dirty and sweeps < max_iter:
        sweeps += 1
        for k in rng.permutation(len(spec.groups)) if sweeps > 1 else range(len(spec.groups)):
            group = spec.groups[k]
            if group.name not in dirty:
                continue
            dirty.discard(group.name)
            cost = _cost(group, s, t_rows, by_key, perms, settled if sweeps == 1 else None)
            settled.add(group.name)
            new = linear_sum_assignment(cost, maximize=True)[1]
            rows, old = np.arange(group.size), perms[group.name].numpy()
            before, after = cost[rows, old].sum(), cost[rows, new].sum()
            if after - before > tol * max(1.0, abs(before)):
                perms[group.name] = torch.from_numpy(new)
                dirty |= neighbours[group.name]
        if sweeps == 1:  # the first sweep saw only part of each cost: check every group on all of it
            dirty = set(perms)
    return perms, sweeps


@dataclass
class _Correlation:
    """Running sums for the correlation of T's channels (rows) with S's channels (columns)."""

    n: int = 0
    sums: list = field(default_factory=lambda: [0.0] * 5)

    def update(self, xs: torch.Tensor, xt: torch.Tensor, axis: int = 1) -> None:
        xs = xs.movedim(axis, -1).reshape(-1, xs.shape[axis]).double().cpu()
        xt = xt.movedim(axis, -1).reshape(-1, xt.shape[axis]).double().cpu()
        self.n += xs.shape[0]
        for i, value in enumerate((xs.sum(0), xt.sum(0), (xs * xs).sum(0), (xt * xt).sum(0), xt.T @ xs)):
            self.sums[i] = self.sums[i] + value

    def matrix(self) -> np.ndarray:
        ss, st, qs, qt, cross = (v / self.n for v in self.sums)
        sd_s, sd_t = (qs - ss**2).clamp_min(0).sqrt(), (qt - st**2).clamp_min(0).sqrt()
        return ((cross - st[:, None] * ss[None, :]) / (sd_t[:, None] * sd_s[None, :]).clamp_min(1e-12)).numpy()


def _lockstep(graphs: tuple[fx.GraphModule, fx.GraphModule], inputs: tuple, visit) -> None:
    """Run two traces of one architecture node by node, calling ``visit(name, out_s, out_t)`` on each.

    Each output is seen before a later in-place op (``ReLU(inplace=True)``) can overwrite it, and
    values are freed after their last use.
    """
    runners, last_use = [], []
    for gm, x in zip(graphs, inputs):
        runner = fx.Interpreter(gm)
        runner.env, runner.args_iter = {}, iter([x])
        runners.append(runner)
        last_use.append({arg: node for node in gm.graph.nodes for arg in node.all_input_nodes})
    for pair in zip(*(gm.graph.nodes for gm in graphs)):
        if pair[0].name != pair[1].name:
            raise AlignmentError(f"source and target graphs differ at {pair[0].name} vs {pair[1].name}")
        outs = []
        for runner, node in zip(runners, pair):
            runner.env[node] = runner.run_node(node)
            outs.append(runner.env[node])
        visit(pair[0].name, *outs)
        for runner, node, last in zip(runners, pair, last_use):
            for arg in node.all_input_nodes:
                if last[arg] is node:
                    del runner.env[arg]


def activation_matching(
    spec: PermSpec, source: nn.Module, target: nn.Module, data: torch.Tensor, batch_size: int = 64
) -> dict[str, torch.Tensor]:
    """Permutations of S that maximise the summed channel correlations with T on ``data`` (eval mode).

    A group that no traced activation shows keeps its order (see :func:`unmatched_groups`).
    """
    graphs = (trace(source), trace(target))
    sizes = {g.name: g.size for g in spec.groups}
    probes, stats = defaultdict(list), defaultdict(_Correlation)
    for node, group, axis, offset in spec.probes:
        probes[node].append((group, axis, offset))

    def visit(name: str, out_s, out_t) -> None:
        for group, axis, offset in probes.get(name, ()):
            size = sizes[group]
            stats[group].update(out_s.narrow(axis, offset, size), out_t.narrow(axis, offset, size), axis)

    modes = {m: m.training for m in list(source.modules()) + list(target.modules())}
    devices = (next(source.parameters()).device, next(target.parameters()).device)
    try:
        graphs[0].eval(), graphs[1].eval()
        with torch.no_grad():
            for i in range(0, len(data), batch_size):
                _lockstep(graphs, tuple(data[i : i + batch_size].to(d) for d in devices), visit)
    finally:
        for m, mode in modes.items():
            m.train(mode)
    return {
        g.name: torch.from_numpy(
            linear_sum_assignment(stats[g.name].matrix() if g.name in stats else np.eye(g.size), maximize=True)[1]
        )
        for g in spec.groups
    }


def unmatched_groups(spec: PermSpec) -> frozenset[str]:
    """Groups that activation matching cannot see (no graph node holds them as a plain slice)."""
    return frozenset(g.name for g in spec.groups) - {group for _, group, _, _ in spec.probes}


@dataclass(frozen=True)
class UnitAlignment:
    """Whether a unit's kernel was aligned: all its hidden channels permutable, at least one axis permuted."""

    name: str
    aligned: bool
    reason: str | None = None


def _kernel_axes(unit: Unit) -> list[tuple[int, str]]:
    if unit.groups[0].name != "conv.weight":
        return [(0, "its")]
    return [(1, "output"), (0, "input")] if unit.kind.startswith("convtranspose") else [(0, "output"), (1, "input")]


def _axis_status(spec: PermSpec, key: str, axis: int, size: int, unmatched: frozenset) -> tuple[str, str | None]:
    """``permuted``, ``natural`` or ``blocked`` (with the reason) for one axis of a kernel."""
    notes = spec.notes_of(key, axis)
    blocked = [n.reason for n in notes if not n.natural]
    groups = {r.group for g in spec.groups for r in g.refs if (r.key, r.axis) == (key, axis)}
    if blocked:
        return "blocked", blocked[0]
    if groups - unmatched:
        return "permuted", None
    if groups:
        return "blocked", "activation matching saw none of these channels (use align='weights')"
    if notes or size == 1:
        return "natural", None
    return "blocked", "not used by the forward pass (it has no effect on the output)"


def unit_alignment(spec: PermSpec, units: tuple[Unit, ...], unmatched: frozenset = frozenset()) -> tuple:
    """One :class:`UnitAlignment` per unit, from the groups and notes of ``spec``."""
    out = []
    for unit in units:
        key, shape = unit.groups[0].keys[0], unit.groups[0].shapes[0]
        statuses = [(label, *_axis_status(spec, key, axis, shape[axis], unmatched)) for axis, label in _kernel_axes(unit)]
        blocked = [f"{label} channels left in place: {why}" for label, status, why in statuses if status == "blocked"]
        if blocked:
            out.append(UnitAlignment(unit.name, False, "; ".join(blocked)))
        elif not any(status == "permuted" for _, status, _ in statuses):
            out.append(UnitAlignment(unit.name, False, "no hidden channels: it touches only the network's input and output"))
        else:
            out.append(UnitAlignment(unit.name, True))
    return tuple(out)


@dataclass(frozen=True, eq=False)
class AlignResult:
    """The aligned source S' (same function as S), how it was found, the permutations and what they covered."""

    model: nn.Module = field(repr=False)
    method: str
    seconds: float
    iterations: int
    perms: dict = field(repr=False, default_factory=dict)
    spec: PermSpec | None = field(repr=False, default=None)
    units: tuple[UnitAlignment, ...] = field(repr=False, default=())

    def to_dict(self) -> dict:
        groups = self.spec.groups if self.spec else ()
        aligned = sum(u.aligned for u in self.units)
        return {
            "method": self.method,
            "seconds": self.seconds,
            "iterations": self.iterations,
            "groups": len(groups),
            "channels": sum(g.size for g in groups),
            "units_aligned": aligned,
            "units_not_aligned": len(self.units) - aligned,
        }


def align_models(
    source: nn.Module,
    target: nn.Module,
    method: str = "weights",
    data: torch.Tensor | None = None,
    seed: int = 0,
    example_input: torch.Tensor | None = None,
    max_iter: int = 100,
) -> AlignResult:
    """Permute the channels of ``source`` to match ``target``; the source itself is left unchanged.

    Args:
        method: ``weights`` (weight matching), ``activations`` (needs ``data``) or ``none``.
        data: input batch for activation matching (and for tracing shapes).
        seed: order of the coordinate descent in weight matching.

    Returns:
        An :class:`AlignResult`; with ``none`` its model is ``source`` itself. Its ``units`` say
        which units were aligned and why the others were not.
    """
    if method not in METHODS:
        raise AlignmentError(f"unknown alignment {method!r}; use one of {', '.join(METHODS)}")
    units = pair_units(source, target)
    if method == "none":
        return AlignResult(source, "none", 0.0, 0, units=not_aligned(units, "alignment method none"))
    if method == "activations" and data is None:
        raise AlignmentError("activation matching needs data (an input batch of the target task); pass data")
    start = time.perf_counter()
    example = example_input if example_input is not None else (data[:2] if data is not None else None)
    spec = permutation_spec(source, example)
    if method == "weights":
        params_s, params_t = dict(source.named_parameters()), dict(target.named_parameters())
        perms, sweeps = weight_matching(spec, params_s, params_t, seed=seed, max_iter=max_iter)
        unmatched = frozenset()
    else:
        perms, sweeps, unmatched = activation_matching(spec, source, target, data), 1, unmatched_groups(spec)
    aligned = apply_permutation(source, spec, perms)
    coverage = unit_alignment(spec, units, unmatched)
    return AlignResult(aligned, method, time.perf_counter() - start, sweeps, perms, spec, coverage)


def not_aligned(units: tuple[Unit, ...], reason: str) -> tuple[UnitAlignment, ...]:
    """Every unit reported as not aligned, for one reason (no alignment was run)."""
    return tuple(UnitAlignment(u.name, False, reason) for u in units)
