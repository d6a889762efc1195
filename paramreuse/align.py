"""Permutation alignment: find the channel permutation of S that brings it closest to T.

Which axes may be permuted together comes from :mod:`paramreuse.permspec`. Two ways to choose
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

from paramreuse.layers import pair_units, trace
from paramreuse.permspec import (
    AlignmentError, AxisRef, PermGroup, PermSpec, apply_permutation, permutation_spec, permuted_tensor, refs_by_key,
)  # fmt: skip

METHODS = ("none", "weights", "activations")


def _cost(group: PermGroup, s: dict, t_rows: dict, by_key: dict, perms: dict) -> np.ndarray:
    """cost[i, j]: inner product of T's channel i with S's channel j over all the group's axes."""
    cost = torch.zeros(group.size, group.size)
    for ref in group.refs:
        if ref.key in s:
            ws = permuted_tensor(s[ref.key], by_key[ref.key], perms, skip=ref)
            cost += t_rows[ref] @ _rows(ws, ref).T
    return cost.numpy().astype(np.float64)


def _rows(t: torch.Tensor, ref: AxisRef) -> torch.Tensor:
    """The ref's slice of ``t`` as a matrix with one row per channel."""
    return t.movedim(ref.axis, 0)[ref.offset : ref.offset + ref.size].reshape(ref.size, -1)


def weight_matching(
    spec: PermSpec, source: dict, target: dict, seed: int = 0, max_iter: int = 100, tol: float = 1e-4
) -> tuple[dict[str, torch.Tensor], int]:
    """Permutations of S that maximise the inner product with T's parameters (coordinate descent).

    Args:
        source, target: state dicts; only the entries given take part (pass parameters only).
        seed: order in which groups are visited.

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
    dirty, rng, sweeps = set(perms), np.random.default_rng(seed), 0
    while dirty and sweeps < max_iter:
        sweeps += 1
        for k in rng.permutation(len(spec.groups)):
            group = spec.groups[k]
            if group.name not in dirty:
                continue
            dirty.discard(group.name)
            cost = _cost(group, s, t_rows, by_key, perms)
            new = linear_sum_assignment(cost, maximize=True)[1]
            rows, old = np.arange(group.size), perms[group.name].numpy()
            before, after = cost[rows, old].sum(), cost[rows, new].sum()
            if after - before > tol * max(1.0, abs(before)):
                perms[group.name] = torch.from_numpy(new)
                dirty |= neighbours[group.name]
    return perms, sweeps


@dataclass
class _Correlation:
    """Running sums for the correlation of T's channels (rows) with S's channels (columns)."""

    n: int = 0
    sums: list = field(default_factory=lambda: [0.0] * 5)

    def update(self, xs: torch.Tensor, xt: torch.Tensor) -> None:
        xs = xs.movedim(1, -1).reshape(-1, xs.shape[1]).double().cpu()
        xt = xt.movedim(1, -1).reshape(-1, xt.shape[1]).double().cpu()
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
    """Permutations of S that maximise the summed channel correlations with T on ``data`` (eval mode)."""
    graphs = (trace(source), trace(target))
    group_of, stats = dict(spec.probes), defaultdict(_Correlation)

    def visit(name: str, out_s, out_t) -> None:
        if name in group_of:
            stats[group_of[name]].update(out_s, out_t)

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


@dataclass(frozen=True, eq=False)
class AlignResult:
    """The aligned source S' (same function as S), how it was found, and the permutations."""

    model: nn.Module = field(repr=False)
    method: str
    seconds: float
    iterations: int
    perms: dict = field(repr=False, default_factory=dict)
    spec: PermSpec | None = field(repr=False, default=None)

    def to_dict(self) -> dict:
        groups = self.spec.groups if self.spec else ()
        return {
            "method": self.method,
            "seconds": self.seconds,
            "iterations": self.iterations,
            "groups": len(groups),
            "channels": sum(g.size for g in groups),
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
        An :class:`AlignResult`; with ``none`` its model is ``source`` itself.
    """
    if method not in METHODS:
        raise AlignmentError(f"unknown alignment {method!r}; use one of {', '.join(METHODS)}")
    pair_units(source, target)
    if method == "none":
        return AlignResult(source, "none", 0.0, 0)
    if method == "activations" and data is None:
        raise AlignmentError("activation matching needs data (an input batch of the target task); pass data")
    start = time.perf_counter()
    example = example_input if example_input is not None else (data[:2] if data is not None else None)
    spec = permutation_spec(source, example)
    if method == "weights":
        params_s, params_t = dict(source.named_parameters()), dict(target.named_parameters())
        perms, sweeps = weight_matching(spec, params_s, params_t, seed=seed, max_iter=max_iter)
    else:
        perms, sweeps = activation_matching(spec, source, target, data), 1
    aligned = apply_permutation(source, spec, perms)
    return AlignResult(aligned, method, time.perf_counter() - start, sweeps, perms, spec)
