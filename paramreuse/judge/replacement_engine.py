"""The sweep engine: evaluate many "T with some tensors replaced by S's" variants fast.

Naive: a full forward pass over the evaluation set per variant. Cached: the model's torch.fx
graph is cut just before the first node that touches a replaced tensor; every node before the
cut computes exactly what T computes, so its values (the *frontier*: those still read after the
cut, skip connections included) are computed once per cut and only the suffix runs per
variant. Variants are processed in cut order and the frontier is advanced incrementally, so all
prefixes together cost one pass of T. Adaptive: a variant stops early once a confidence interval
of its drop lies clearly on one side of the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.optim.swa_utils import update_bn

from paramreuse.models.units import GraphError, trace

Env = dict[fx.Node, object]


@contextmanager
def replaced(model: nn.Module, values: dict[str, torch.Tensor]) -> Iterator[nn.Module]:
    """Temporarily copy ``values`` (state-dict keys) into ``model``; everything is restored after."""
    state = model.state_dict()
    saved = {k: state[k].clone() for k in values}
    try:
        with torch.no_grad():
            for k, v in values.items():
                state[k].copy_(v)
        yield model
    finally:
        with torch.no_grad():
            for k, v in saved.items():
                state[k].copy_(v)


def norm_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Running statistics of every batch-norm layer (what BN recalibration overwrites)."""
    return {
        f"{name}.{b}": getattr(m, b)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for b in ("running_mean", "running_var", "num_batches_tracked")
    }


def recalibrate_bn(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Re-estimate every BN layer's running statistics on ``batches`` (torch's update_bn)."""
    update_bn(batches, model)
    model.eval()


class GraphCutter:
    """Runs a traced model between two positions of its node list, from cached values."""

    def __init__(self, model: nn.Module):
        self.model = model
        try:
            self.nodes = list(trace(model).graph.nodes)
            self.fallback: str | None = None
        except GraphError as exc:
            self.nodes, self.fallback = [], str(exc)
        if sum(n.op == "placeholder" for n in self.nodes) > 1:
            self.nodes, self.fallback = [], "the model takes more than one input"
        self.index = {n: i for i, n in enumerate(self.nodes)}

    @property
    def usable(self) -> bool:
        return self.fallback is None

    def cut(self, keys: set[str] | list[str], recalibrate: bool = False) -> int:
        """Index of the first node reading any module that owns one of ``keys``."""
        owners = {k.rsplit(".", 1)[0] if "." in k else "" for k in keys}
        if recalibrate:  # re-estimated statistics change every BN layer, the first included
            owners |= {n for n, m in self.model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        for i, node in enumerate(self.nodes):
            if node.op in ("call_module", "get_attr") and any(_owns(o, str(node.target)) for o in owners):
                return i
        return len(self.nodes) - 1  # nothing read: only the output node remains

    def frontier(self, cut: int) -> list[fx.Node]:
        """Nodes before ``cut`` whose values are read at or after it."""
        return [n for n in self.nodes[:cut] if any(self.index[u] >= cut for u in n.users)]

    def run(self, env: Env, start: int, stop: int) -> Env:
        """Execute nodes ``start..stop-1`` reading and writing ``env``; returns ``env``."""
        for node in self.nodes[start:stop]:
            args = fx.node.map_arg(node.args, env.__getitem__)
            kwargs = fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.op == "call_module":
                env[node] = self.model.get_submodule(node.target)(*args, **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "get_attr":
                env[node] = _attr(self.model, node.target)
            elif node.op == "output":
                env[node] = args[0]
            else:
                raise RuntimeError(f"placeholder {node.name} must be supplied in env")
        return env

    def output(self, env: Env) -> torch.Tensor:
        return env[self.nodes[-1]]


def _owns(owner: str, target: str) -> bool:
    return owner == "" or target == owner or target.startswith(owner + ".")


def _attr(model: nn.Module, path: str) -> object:
    obj: object = model
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


class FrontierCache:
    """The frontier of every batch at the current cut, shared by all variants cut there.

    Each variant's suffix reads the same cached tensors, so an in-place op after the cut
    (``x.add_(f(x))`` on a skip, ``nn.ReLU(inplace=True)`` on a tensor computed before the cut;
    fx records ``x += y`` as an out-of-place add) would change them for every later variant.
    Guard: the tensors' version counters are recorded when cached and checked after each suffix
    run. The variant that wrote computed what T's own forward computes, so its output stands;
    the written frontier is recomputed from the input (the nodes before the cut read no replaced
    value), and from then on each suffix gets copies, unless frontier tensors share memory
    (copies would lose that), where every write is followed by a recomputation. The checks cost ~0.03% of a cached sweep of the builtin CNN; copying
    from the start cost ~12% there, on every model, though most never write in place.
    """

    def __init__(self, cutter: GraphCutter, inputs: list[torch.Tensor]):
        self.cutter, self.inputs = cutter, inputs
        self.envs: list[Env] = [{cutter.nodes[0]: x} for x in inputs]
        self.position = 1
        self.versions = [_versions(env) for env in self.envs]
        self.aliased = False
        self.written = False  # a suffix has written into a cached tensor

    @torch.no_grad()
    def advance(self, cut: int) -> None:
        """Run every batch's prefix on to ``cut`` and keep only the values read from there on."""
        if cut == self.position:
            return
        keep = set(self.cutter.frontier(cut))
        for b, env in enumerate(self.envs):
            self.cutter.run(env, self.position, cut)
            self.envs[b] = {n: v for n, v in env.items() if n in keep}
        self.position = cut
        self.versions = [_versions(env) for env in self.envs]
        self.aliased = any(_aliased(env) for env in self.envs)

    def suffix(self, b: int) -> torch.Tensor:
        """The model's output on batch ``b``, running only the nodes from the cut on."""
        copy = self.written and not self.aliased
        env = {n: _copied(v) for n, v in self.envs[b].items()} if copy else dict(self.envs[b])
        out = self.cutter.output(self.cutter.run(env, self.position, len(self.cutter.nodes)))
        if _versions(self.envs[b]) != self.versions[b]:
            self.written = True
            self.envs[b] = self._recomputed(self.inputs[b])
            self.versions[b] = _versions(self.envs[b])
        return out

    @torch.no_grad()
    def _recomputed(self, x: torch.Tensor) -> Env:
        keep = set(self.cutter.frontier(self.position))
        env = self.cutter.run({self.cutter.nodes[0]: x}, 1, self.position)
        return {n: v for n, v in env.items() if n in keep}


def _tensors(value: object) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    fx.node.map_aggregate(value, lambda v: found.append(v) if isinstance(v, torch.Tensor) else None)
    return found


def _versions(env: Env) -> tuple[int, ...]:
    # Inference tensors have no version counter, and torch refuses in-place ops on them anyway.
    return tuple(t._version for v in env.values() for t in _tensors(v) if not t.is_inference())


def _aliased(env: Env) -> bool:
    storages = [t.untyped_storage().data_ptr() for v in env.values() for t in _tensors(v)]
    return len(set(storages)) < len(storages)


def _copied(value: object) -> object:
    if not _tensors(value):  # leave sizes, ints and the like as they are (map_aggregate rebuilds tuples)
        return value
    return fx.node.map_aggregate(value, lambda v: v.clone() if isinstance(v, torch.Tensor) else v)


@dataclass(frozen=True)
class StopRule:
    """Stop a variant early once the z-interval of its mean drop excludes ``tolerance``.

    ``z`` is strict (3.29, a 99.9% normal interval) so that an early verdict agrees with the
    full evaluation's; at least ``min_samples`` are always evaluated.
    """

    tolerance: float
    z: float = 3.29
    min_samples: int = 256

    def decided(self, diffs: torch.Tensor) -> bool:
        n = len(diffs)
        if n < self.min_samples:
            return False
        mean = float(diffs.mean())
        half = self.z * float(diffs.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.inf
        # No disagreement yet is no proof: with none in n samples the rate is below 7/n at 99.9%.
        half = max(half, 7.0 / n)
        return mean + half < self.tolerance or mean - half > self.tolerance


@dataclass(frozen=True)
class Variant:
    """One evaluation: these state-dict values replaced (and optionally BN recalibrated)."""

    values: dict
    recalibrate: bool = False


@dataclass(frozen=True)
class Evaluated:
    scores: torch.Tensor  # per evaluated sample, in evaluation order
    stopped_early: bool


class Evaluator:
    """Evaluates variants of ``model`` on fixed batches, naively or from cached frontiers."""

    def __init__(
        self,
        model: nn.Module,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
        score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        calibration: list[torch.Tensor] | None = None,
        cached: bool = True,
    ):
        self.model = model.eval()
        self.batches, self.score = batches, score
        self.calibration = calibration or []
        self.cutter = GraphCutter(model) if cached else None
        self.baseline = self._full_scores()

    @property
    def mode(self) -> str:
        if self.cutter is None:
            return "naive"
        return "cached" if self.cutter.usable else "naive (fallback)"

    @torch.no_grad()
    def _full_scores(self) -> torch.Tensor:
        return torch.cat([self.score(self.model(x), y).cpu() for x, y in self.batches])

    def evaluate_all(self, variants: list[Variant], rule: StopRule | None = None) -> Iterator[tuple[int, Evaluated]]:
        """Yield (index, result) for every variant; cached variants come in cut order."""
        if self.cutter is None or not self.cutter.usable:
            for i, v in enumerate(variants):
                yield i, self._run(v, rule, lambda x, _b: self.model(x))
            return
        cuts = [self.cutter.cut(v.values, v.recalibrate) for v in variants]
        cache = FrontierCache(self.cutter, [x for x, _ in self.batches])
        for i in sorted(range(len(variants)), key=cuts.__getitem__):
            cache.advance(max(cuts[i], 1))
            yield i, self._run(variants[i], rule, lambda _x, b: cache.suffix(b))

    @torch.no_grad()
    def _run(self, variant: Variant, rule: StopRule | None, forward: Callable) -> Evaluated:
        values = dict(variant.values)
        if variant.recalibrate:
            values |= {k: v.clone() for k, v in norm_buffers(self.model).items() if k not in values}
        with replaced(self.model, values):
            if variant.recalibrate:
                recalibrate_bn(self.model, self.calibration)
            scores, seen = [], 0
            for b, (x, y) in enumerate(self.batches):
                scores.append(self.score(forward(x, b), y).cpu())
                seen += len(y)
                if rule is not None and b + 1 < len(self.batches) and rule.decided(self.baseline[:seen] - torch.cat(scores)):
                    return Evaluated(torch.cat(scores), True)
            return Evaluated(torch.cat(scores), False)
