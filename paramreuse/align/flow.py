"""The channel flow of a traced graph: every node's value by its rule, pass after pass until the cuts settle."""

from __future__ import annotations

from torch import fx

from paramreuse.align.channels import NETWORK_INPUT, NETWORK_OUTPUT, ParamRef, Spaces, Static, Value, shape_of
from paramreuse.align.rules import function_value, module_value


def node_value(sp: Spaces, node: fx.Node, gm: fx.GraphModule, values: dict, state_keys: set) -> Value:
    if node.op == "placeholder":
        return Static(NETWORK_INPUT, natural=True)
    if node.op == "get_attr":
        shape = shape_of(node)
        if node.target not in state_keys or shape is None:
            return Static(f"constant {node.target}")
        big = tuple((a, a, s) for a, s in enumerate(shape) if s > 1)
        return ParamRef(node.target, len(shape), big)
    if node.op == "output":
        for n in node.all_input_nodes:
            sp.fix(values.get(n), NETWORK_OUTPUT, natural=True)
        return None
    if node.op == "call_module":
        return module_value(sp, node, gm.get_submodule(node.target), values)
    return function_value(sp, node, gm, values)


def channel_flow(gm: fx.GraphModule, state_keys: set, splits: dict) -> tuple[Spaces, dict]:
    """One pass of the rules over the graph: the spaces, their bindings, and every node's value."""
    sp, values = Spaces(splits), {}
    for node in gm.graph.nodes:
        values[node] = node_value(sp, node, gm, values, state_keys)
    return sp, values


def settled_flow(gm: fx.GraphModule, state_keys: set, max_passes: int = 4) -> tuple[Spaces, dict]:
    """Passes until no grouped layer asks for further cuts (cuts requested in a pass apply to the next)."""
    splits: dict = {}
    for _ in range(max_passes):
        sp, values = channel_flow(gm, state_keys, splits)
        asked = sp.requested_splits()
        grown = {k: splits.get(k, frozenset()) | v for k, v in asked.items()}
        if all(v <= splits.get(k, frozenset()) for k, v in grown.items()):
            return sp, values
        splits = {**splits, **grown}
    return sp, values
