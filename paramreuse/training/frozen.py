"""Frozen units computed once: a training whose leading units are frozen runs them once per image.

A frozen unit (rate 0, its normalisation layers held in eval mode) computes the same output for
an image at every step, and every run that freezes the same tensors of S computes the same
outputs on the same test set. So the model's torch.fx graph is cut after its frozen prefix, at a
node whose value is the only thing the rest of the graph reads (a skip connection that crosses
the cut rules a position out); the prefix runs once per image, its outputs are kept, and only
the rest is trained and evaluated. Outputs are kept per process, keyed by the prefix's code, its
tensors' bytes and the images' bytes, up to :data:`CACHE_BYTES`.

Nothing random or mode-dependent may sit in the prefix: a dropout, a normalisation layer that
is not held in eval mode, or a trainable tensor ends it. The training loop applies no data
augmentation (every step sees ``data.x`` as it is), which is what makes stored outputs valid.
When no such cut exists (the model cannot be traced, takes two inputs, or reads its input again
after the frozen units), :func:`split_frozen` says why and the caller runs the whole model, as
before. ``PARAMREUSE_FROZEN_CACHE=off`` turns the cache off (the benchmark's old path).
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import fx, nn

from paramreuse.models.state_dicts import state_digest
from paramreuse.models.units import GraphError, trace

SWITCH = "PARAMREUSE_FROZEN_CACHE"
CACHE_BYTES = 512 * 2**20  # stored prefix outputs per process (least recently used dropped first)
UNSAFE_MODULES = (nn.modules.dropout._DropoutNd, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU)
UNSAFE_FUNCTIONS = ("dropout", "rand", "bernoulli", "normal", "uniform", "multinomial", "batch_norm", "instance_norm")


def enabled() -> bool:
    """Whether frozen prefixes are cached (``PARAMREUSE_FROZEN_CACHE`` = off, 0 or false turns it off)."""
    return os.environ.get(SWITCH, "on").strip().lower() not in ("off", "0", "false", "no")


@dataclass(frozen=True, eq=False)
class FrozenSplit:
    """The model cut after its frozen prefix: ``prefix(x)`` is what ``rest`` reads instead of ``x``.

    Both share the model's modules (training ``rest`` trains the model); ``modules`` lists the
    parametric modules the prefix covers, ``key`` identifies its code and tensors.
    """

    prefix: fx.GraphModule
    rest: fx.GraphModule
    modules: tuple[str, ...]
    key: str

    @torch.no_grad()
    def features(self, x: torch.Tensor, device: torch.device | str, batch_size: int = 256) -> torch.Tensor:
        """The prefix's outputs for images ``x`` (on the CPU), from the process's store when there."""
        key = (self.key, _images_digest(x))
        if key in _STORE:
            _STORE.move_to_end(key)
            return _STORE[key]
        parts = [self.prefix(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
        out = torch.cat(parts) if parts else x.new_zeros((0,))
        _keep(key, out)
        return out


@dataclass(frozen=True)
class NoSplit:
    """Why the whole model runs: no frozen prefix could be cut off."""

    reason: str


def split_frozen(model: nn.Module, held_norms: list[nn.Module] | tuple = ()) -> FrozenSplit | NoSplit:
    """Cut ``model`` (in the mode it will run in) after its longest frozen prefix whose output alone feeds the rest.

    ``held_norms``: normalisation layers held in eval mode while the model trains (in eval mode
    every one is). The cut may fall before the last frozen unit (a skip connection crosses it
    there), but at least one frozen parametric module must lie before it.
    """
    if not enabled():
        return NoSplit(f"{SWITCH} is off")
    try:
        graph = trace(model).graph
    except GraphError as exc:
        return NoSplit(str(exc))
    nodes = list(graph.nodes)
    if sum(n.op == "placeholder" for n in nodes) != 1:
        return NoSplit("the model takes more than one input")
    held = {id(m) for m in held_norms}
    region = _frozen_region(model, nodes, held)
    cut = _last_cut(model, nodes, region)
    if cut is None:
        return NoSplit("no node after a frozen unit is the only value the rest of the model reads")
    prefix, rest = _build(model, nodes, *cut)
    covered = tuple(str(n.target) for n in prefix.graph.nodes if n.op == "call_module" and _has_params(model, n))
    # The modules' settings (strides, paddings) are in their repr, the graph in the code, the tensors in the digest.
    text = hashlib.sha256(str(prefix).encode()).hexdigest()[:16]
    return FrozenSplit(prefix, rest, covered, f"{text}-{state_digest(prefix.state_dict())}")


def _has_params(model: nn.Module, node: fx.Node) -> bool:
    return any(True for _ in model.get_submodule(str(node.target)).parameters())


def _safe_module(module: nn.Module, held: set[int]) -> bool:
    if any(p.requires_grad for p in module.parameters()) or isinstance(module, UNSAFE_MODULES):
        return False
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return id(module) in held or not module.training
    if isinstance(module, nn.modules.instancenorm._InstanceNorm) and module.track_running_stats:
        return not module.training
    return True


def _frozen_region(model: nn.Module, nodes: list[fx.Node], held: set[int]) -> int:
    """How many leading nodes compute the same value at every step: no trainable tensor, nothing random."""
    for i, node in enumerate(nodes):
        if node.op == "output":
            return i
        if node.op == "call_module" and not _safe_module(model.get_submodule(str(node.target)), held):
            return i
        if node.op == "get_attr" and _trainable_attr(model, str(node.target)):
            return i
        if node.op in ("call_function", "call_method"):
            name = getattr(node.target, "__name__", str(node.target)).lower()
            if any(word in name for word in UNSAFE_FUNCTIONS):
                return i
    return len(nodes)


def _trainable_attr(model: nn.Module, path: str) -> bool:
    value = model.get_parameter(path) if path in dict(model.named_parameters()) else None
    return value is not None and value.requires_grad


def _last_cut(model: nn.Module, nodes: list[fx.Node], region: int) -> tuple[int, fx.Node] | None:
    """The last index ``i < region`` after which one node (not the input, nor before every frozen module) is
    the only value still read, and that node."""
    index = {n: i for i, n in enumerate(nodes)}
    last_use = {n: max((index[u] for u in n.users), default=-1) for n in nodes}
    first_frozen = next((i for i, n in enumerate(nodes[:region]) if n.op == "call_module" and _has_params(model, n)), None)
    if first_frozen is None:
        return None
    for i in range(region - 1, first_frozen - 1, -1):
        live = [n for n in nodes[: i + 1] if n.op != "get_attr" and last_use[n] > i]
        if len(live) == 1 and live[0].op != "placeholder":
            return (i, live[0]) if index[live[0]] >= first_frozen else None
    return None


def _build(model: nn.Module, nodes: list[fx.Node], cut: int, value: fx.Node) -> tuple[fx.GraphModule, fx.GraphModule]:
    """The graph up to ``nodes[cut]`` returning ``value``, and the graph after it reading ``value`` as its input.

    No dead-code elimination: an in-place op whose result nobody reads still changes the tensor it
    writes, so every node is kept on its side of the cut.
    """
    head, env = fx.Graph(), {}
    for node in nodes[: cut + 1]:
        env[node] = head.node_copy(node, env.__getitem__)
    head.output(env[value])
    tail = fx.Graph()
    later = {value: tail.placeholder("frozen_features")}
    for node in nodes[: cut + 1]:  # constants read after the cut
        if node.op == "get_attr" and any(nodes.index(u) > cut for u in node.users):
            later[node] = tail.node_copy(node, later.__getitem__)
    for node in nodes[cut + 1 :]:
        later[node] = tail.node_copy(node, later.__getitem__)
    return _pruned(fx.GraphModule(model, head)), _pruned(fx.GraphModule(model, tail))


def _pruned(module: fx.GraphModule) -> fx.GraphModule:
    """``module`` without the submodules its graph does not call."""
    module.delete_all_unused_submodules()
    module.recompile()
    return module


_STORE: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()  # a cache: its content never changes a result
_DIGESTS: dict[int, tuple] = {}  # id of an images tensor -> (a weak reference to it, its version, its digest)


def _images_digest(x: torch.Tensor) -> str:
    """A content hash of ``x`` (remembered for the tensor object while it is unchanged)."""
    known = _DIGESTS.get(id(x))
    if known is not None and known[0]() is x and known[1] == x._version:
        return known[2]
    digest, key = state_digest({"x": x}), id(x)
    _DIGESTS[key] = (weakref.ref(x, lambda _: _DIGESTS.pop(key, None)), x._version, digest)
    return digest


def _keep(key: tuple[str, str], value: torch.Tensor) -> None:
    _STORE[key] = value
    while len(_STORE) > 1 and sum(v.numel() * v.element_size() for v in _STORE.values()) > CACHE_BYTES:
        _STORE.popitem(last=False)
    if value.numel() * value.element_size() > CACHE_BYTES:
        _STORE.pop(key, None)


def clear() -> None:
    """Forget every stored prefix output (tests; a process that needs the memory back)."""
    _STORE.clear()
