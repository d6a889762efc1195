"""J3: per-layer distances between the parameters of S and T, with null references and lineage.

Every distance is reported raw (S as given) and after alignment (S' = S with its channels
permuted to match T), normalised by the RMS of T's values, and placed between two references:
0 (S equals T) and ``rmse_null``, the expected RMSE between T's values and a fresh draw of the
layer's own default initialiser (``reset_parameters`` on a copy, averaged over seeded draws).
``null_position = rmse / rmse_null``: near 0 means S's values are as good as T's own, near 1
means they are no closer to T than a random initialisation is. A layer's headline numbers are
those of its kernel (``conv.weight``); ``groups`` has them for every parameter group.
"""

from __future__ import annotations

import copy
import math
import statistics
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from paramreuse.align.matching import METHODS, AlignmentError, AlignResult, UnitAlignment, align_models, not_aligned
from paramreuse.errors import ParamreuseError
from paramreuse.models.units import Unit, group_values, pair_units

LINEAGES = ("finetuned", "independent")
LINEAGE_LAYERS = 3
LINEAGE_THRESHOLD = 0.5
LINEAGE_RULE = (
    f"finetuned when the median of rmse_raw / rmse_null over the kernels of the first {LINEAGE_LAYERS} layers "
    f"is below {LINEAGE_THRESHOLD} (S sits much closer to T than a fresh initialisation does, as after "
    f"fine-tuning S into T), else independent"
)


def rms(values: torch.Tensor) -> float:
    """Root mean square of a tensor's values."""
    return values.double().pow(2).mean().sqrt().item()


def rmse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Root mean squared difference of two tensors of the same shape."""
    return rms(a.double() - b.double())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two flattened tensors; NaN when either is all zeros."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    norms = a.norm() * b.norm()
    return (a @ b / norms).item() if norms > 0 else math.nan


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; 0 when both are 0 and NaN when only the denominator is."""
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else math.nan


def _fresh_state(modules: dict[str, nn.Module], seed: int) -> dict[str, torch.Tensor]:
    """State of CPU copies of ``modules`` (name -> module) re-initialised with their own initialiser."""
    state = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, module in modules.items():
            fresh = copy.deepcopy(module).to("cpu")
            fresh.reset_parameters()
            state.update({f"{name}.{k}" if name else k: v for k, v in fresh.state_dict().items()})
    return state


def null_references(model: nn.Module, units: tuple[Unit, ...], draws: int = 3, seed: int = 0) -> dict:
    """Expected RMSE between each group's values and a fresh default initialisation of its layer.

    Returns:
        ``{(unit name, group name): rmse_null}``; NaN where a layer has no ``reset_parameters``.
    """
    state, nulls = model.state_dict(), {}
    for unit in units:
        names = [n for n in (unit.name, unit.norm) if n is not None]
        modules = {n: model.get_submodule(n) for n in names}
        if not all(hasattr(m, "reset_parameters") for m in modules.values()):
            nulls.update({(unit.name, g.name): math.nan for g in unit.groups})
            continue
        fresh = [_fresh_state(modules, seed + d) for d in range(draws)]
        for g in unit.groups:
            target = group_values(state, g)
            nulls[(unit.name, g.name)] = sum(rmse(target, group_values(f, g)) for f in fresh) / draws
    return nulls


@dataclass(frozen=True)
class GroupDistance:
    """Distances between S's and T's values of one parameter group."""

    group: str
    shape: tuple[int, ...]
    rmse_raw: float
    rmse: float
    rmse_normalized: float
    rmse_null: float
    null_position: float
    cosine: float


@dataclass(frozen=True)
class LayerDistance:
    """One unit: the distances of its kernel (lead columns ``name, kind, shape``) and of every group."""

    name: str
    kind: str
    shape: tuple[int, ...]
    rmse_raw: float
    rmse: float
    rmse_normalized: float
    rmse_null: float
    null_position: float
    cosine: float
    groups: tuple[GroupDistance, ...]
    aligned: bool = False
    reason: str | None = "not aligned"

    def to_dict(self) -> dict:
        """Lead columns ``name, kind, shape, aligned`` (+ ``reason`` when not aligned), then the distances."""
        data = asdict(self)
        lead = {k: data.pop(k) for k in ("name", "kind", "shape", "aligned", "reason")}
        if lead["aligned"]:
            del lead["reason"]
        return {**lead, **data}


def group_distance(name: str, shape: tuple, source: torch.Tensor, aligned: torch.Tensor, target: torch.Tensor,
                   null: float) -> GroupDistance:  # fmt: skip
    """Distances of one group from its flat values in S, S' (aligned S) and T, and its null reference."""
    distance = rmse(aligned, target)
    return GroupDistance(
        group=name,
        shape=shape,
        rmse_raw=rmse(source, target),
        rmse=distance,
        rmse_normalized=ratio(distance, rms(target)),
        rmse_null=null,
        null_position=ratio(distance, null),
        cosine=cosine(aligned, target),
    )


def layer_distances(
    source: dict, aligned: dict, target: dict, units: tuple[Unit, ...], nulls: dict, coverage: tuple = ()
) -> tuple:
    """Per-unit distances from the state dicts of S, S' and T and the null references.

    Args:
        coverage: one :class:`UnitAlignment` per unit (whether S' was aligned there); default: none was.

    Returns:
        A tuple of :class:`LayerDistance`, one per unit, in the order of ``units``.
    """
    layers = []
    status = {u.name: u for u in coverage}
    for unit in units:
        unit_status = status.get(unit.name, UnitAlignment(unit.name, False, "not aligned"))
        groups = tuple(
            group_distance(
                g.name,
                g.shapes[0] if len(g.shapes) == 1 else (len(g.shapes), *g.shapes[0]),
                group_values(source, g),
                group_values(aligned, g),
                group_values(target, g),
                nulls[(unit.name, g.name)],
            )
            for g in unit.groups
        )
        head = groups[0]  # the kernel for conv/linear units; a lone norm layer leads with its weight
        fields = {k: getattr(head, k) for k in ("rmse_raw", "rmse", "rmse_normalized", "rmse_null", "null_position")}
        layers.append(LayerDistance(unit.name, unit.kind, unit.shape, **fields, cosine=head.cosine, groups=groups,
                                    aligned=unit_status.aligned, reason=unit_status.reason))  # fmt: skip
    return tuple(layers)


def detect_lineage(layers: tuple[LayerDistance, ...]) -> str:
    """``finetuned`` or ``independent`` by :data:`LINEAGE_RULE` (independent when nothing is measurable)."""
    kernels = [layer for layer in layers if layer.groups and layer.groups[0].group == "conv.weight"]
    positions = [ratio(k.rmse_raw, k.rmse_null) for k in kernels[:LINEAGE_LAYERS]]
    positions = [p for p in positions if math.isfinite(p)]
    if positions and statistics.median(positions) < LINEAGE_THRESHOLD:
        return "finetuned"
    return "independent"


@dataclass(frozen=True, eq=False)
class Comparison:
    """The J3 comparison of S with T (``comparison.json``), and the aligned source S'."""

    lineage: str
    lineage_detected: str
    lineage_rule: str
    alignment: dict
    layers: tuple[LayerDistance, ...]
    aligned_source: nn.Module = field(repr=False)

    def to_dict(self) -> dict:
        """The ``comparison.json`` content; undefined values (NaN) become None."""
        return _json_safe(
            {
                "lineage": self.lineage,
                "lineage_detected": self.lineage_detected,
                "lineage_rule": self.lineage_rule,
                "alignment": dict(self.alignment),
                "layers": [layer.to_dict() for layer in self.layers],
            }
        )


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def _check_choices(align: str, lineage: str | None) -> None:
    if align not in ("auto", *METHODS):
        raise ParamreuseError(f"unknown alignment {align!r}; use auto, {', '.join(METHODS)}")
    if lineage is not None and lineage not in LINEAGES:
        raise ParamreuseError(f"unknown lineage {lineage!r}; use {' or '.join(LINEAGES)} (or leave it out to detect)")


def compare_models(
    source: nn.Module,
    target: nn.Module,
    align: str = "auto",
    data: torch.Tensor | None = None,
    lineage: str | None = None,
    seed: int = 0,
    draws: int = 3,
    *,
    example_input: torch.Tensor | None = None,
) -> Comparison:
    """Compare S's parameters with T's, layer by layer and group by group (J3).

    Args:
        align: ``auto`` (weight matching for independent pairs, nothing for fine-tuned ones),
            ``none``, ``weights`` or ``activations`` (needs ``data``).
        data: a batch of target inputs for activation matching.
        lineage: ``finetuned`` or ``independent`` to state it; None detects it by :data:`LINEAGE_RULE`.
        seed: seeds the null draws and the order of weight matching.
        draws: fresh initialisations averaged into each ``rmse_null``.
        example_input: a batch the models take, for tracing the graph's shapes when there is no
            ``data`` (weight matching needs no data, but the graph needs the input size).

    Raises:
        PairingError: the models' layers differ. ParamreuseError: an unknown option.
    """
    _check_choices(align, lineage)
    units = pair_units(source, target)
    nulls = null_references(target, units, draws, seed)
    s_state, t_state = source.state_dict(), target.state_dict()
    detected = detect_lineage(layer_distances(s_state, s_state, t_state, units, nulls))
    chosen = lineage or detected
    method = align if align != "auto" else ("weights" if chosen == "independent" else "none")
    note = None
    try:
        result = align_models(source, target, method, data=data, seed=seed, example_input=example_input)
    except AlignmentError as exc:
        if align != "auto":
            raise
        result, note = AlignResult(source, "none", 0.0, 0), f"alignment skipped: {exc}"
    result, note = _honest(result, units, note or _why_none(align, chosen))
    coverage = result.units
    layers = layer_distances(s_state, result.model.state_dict(), t_state, units, nulls, coverage)
    alignment = {**result.to_dict(), "requested": align, "note": note}
    return Comparison(chosen, detected, LINEAGE_RULE, alignment, layers, result.model)


def _why_none(align: str, lineage: str) -> str | None:
    if align == "none":
        return "alignment not requested (align='none'): distances are raw"
    if align == "auto" and lineage == "finetuned":
        return "fine-tuned pair: S and T share their channel order, so S is compared as it is"
    return None


def _honest(result: AlignResult, units: tuple[Unit, ...], note: str | None) -> tuple[AlignResult, str | None]:
    """Never call a pair aligned when nothing was permuted; say how many units were left as they are."""
    if result.method == "none":
        units_status = not_aligned(units, note or "not aligned")
        return AlignResult(result.model, "none", result.seconds, 0, units=units_status), note
    if not result.spec.groups:
        reasons = [u.reason for u in result.units if u.reason]
        why = f" ({reasons[0]})" if reasons else ""
        note = f"{result.method} matching found no channels it can permute{why}: distances are raw"
        return AlignResult(result.model, "none", result.seconds, 0, spec=result.spec,
                           units=not_aligned(units, note)), note  # fmt: skip
    missed = [u for u in result.units if not u.aligned]
    if missed:
        note = f"{len(missed)} of {len(units)} units could not be fully aligned (layers[].reason says why)"
    return result, note
