"""The study's answer in one sentence, composed from its result files (no recomputation)."""

from __future__ import annotations

from dataclasses import dataclass

from paramreuse.stats import Bounds, clip, difference_bounds, not_enough_seeds, seed_interval

REUSE_DECISIONS = ("reuse-frozen", "reuse-finetuned")
CONTRACT_UNITS = {"accuracy": "fraction", "dice": "fraction", "iou": "fraction", "psnr": "dB"}  # DESIGN.md
# Strategies that choose with labels a user does not have: transfer.json flags them ("oracle": true);
# files written before the flag name them here. Shown as "name (oracle)" wherever they appear.
ORACLES = ("best-depth",)
GAINS_AGAINST = ("scratch", "finetune-all")  # what the verdict sentence weighs the plan against
AGAINST = {"scratch": "training from scratch", "finetune-all": "fine-tuning everything"}


@dataclass(frozen=True)
class MetricStyle:
    """How to print and plot a metric: its name and units (``fraction`` in [0, 1], ``dB``, ...)."""

    name: str
    units: str

    @property
    def bounded(self) -> bool:
        return self.units == "fraction"

    @property
    def bounds(self) -> Bounds | None:
        """The metric's range: [0, 1] for fractions, else unbounded."""
        return (0.0, 1.0) if self.bounded else None

    @property
    def difference_bounds(self) -> Bounds | None:
        """The range of a difference of two values: [-1, 1] for fractions."""
        return difference_bounds(self.bounds)

    def clip(self, ci, difference: bool = False) -> list[float] | None:
        """``ci`` kept inside the metric's range (or a difference's), for files written before CIs were clipped."""
        if not ci:
            return None
        return list(clip(tuple(ci), self.difference_bounds if difference else self.bounds))

    def number(self, value: float | None, signed: bool = False) -> str:
        """The value without units: three decimals for fractions, two otherwise; ``n/a`` when missing."""
        if value is None:
            return "n/a"
        digits = 3 if self.bounded else 2
        value = round(value, digits) + 0.0  # no "-0.000": a value that rounds to zero prints as zero
        return f"{value:{'+' if signed else ''}.{digits}f}"

    def fmt(self, value: float | None, signed: bool = False) -> str:
        """``0.801`` for fractions, ``31.20 dB`` for decibels."""
        suffix = f" {self.units}" if self.units and not self.bounded and value is not None else ""
        return self.number(value, signed) + suffix

    def limits(self, lows: list[float], highs: list[float]) -> tuple[float, float]:
        """Plot limits: the data's range with a margin, kept inside [0, 1] for fractions."""
        lo, hi = min(lows), max(highs)
        pad = 0.08 * (hi - lo) or (0.05 if self.bounded else 1.0)
        if self.bounded:
            return max(0.0, lo - pad), min(1.0, hi + pad)
        return lo - pad, hi + pad


def metric_style(name: str, values: list[float] = (), units: str | None = None) -> MetricStyle:
    """The metric's units: as given, else from the task registry, the contract's table, or the values' range.

    An unknown metric is a fraction when every value lies in [0, 1].
    """
    from paramreuse.tasks import TASKS

    if units:
        return MetricStyle(name, units)
    for task in TASKS.values():
        if task.metric_name == name:
            return MetricStyle(name, task.units)
    if name in CONTRACT_UNITS:
        return MetricStyle(name, CONTRACT_UNITS[name])
    return MetricStyle(name, "fraction" if values and all(0.0 <= v <= 1.0 for v in values) else "")


def compact(names: list[str], order: list[str]) -> str:
    """``a, b`` or ``first–last (k units)`` for runs of three or more consecutive units in ``order``."""
    index = {n: i for i, n in enumerate(order)}
    runs: list[list[str]] = []
    for name in sorted(names, key=lambda n: index.get(n, len(order))):
        if runs and index.get(name, -2) == index.get(runs[-1][-1], -9) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    parts = [f"{r[0]}–{r[-1]} ({len(r)} units)" if len(r) >= 3 else ", ".join(r) for r in runs]
    return ", ".join(parts)


def units_clause(plan: dict) -> str:
    """Which units to reuse, frozen or fine-tuned, and which to re-initialise."""
    order = [layer["name"] for layer in plan["layers"]]
    by = {
        d: [layer["name"] for layer in plan["layers"] if layer["decision"] == d] for d in (*REUSE_DECISIONS, "reinit")
    }
    if not by["reuse-frozen"] and not by["reuse-finetuned"]:
        return "no unit passes J2 or J3, so train the target from scratch"
    parts = []
    if by["reuse-frozen"]:
        parts.append(f"{compact(by['reuse-frozen'], order)} frozen")
    if by["reuse-finetuned"]:
        parts.append(f"{compact(by['reuse-finetuned'], order)} fine-tuned")
    text = "reuse " + " and ".join(parts)
    if by["reinit"]:
        text += f", and re-initialise {compact(by['reinit'], order)}"
    return text


def unit_j2(layer: dict) -> str | None:
    """A unit's J2 verdict: plan.json's ``j2`` ("reusable", "not reusable", "undecided"; None: not judged).

    Files written before ``j2`` existed give it from ``reusable_by_replacement``.
    """
    if "j2" in layer:
        return layer["j2"]
    return "reusable" if layer.get("reusable_by_replacement") else "not reusable"


def undecided_units(plan: dict) -> list[str]:
    """Units whose J2 drop has a CI straddling the tolerance."""
    return [layer["name"] for layer in plan["layers"] if unit_j2(layer) == "undecided"]


def is_oracle(name: str, entry: dict | None = None) -> bool:
    """Whether a strategy picks with held-out labels (best-depth its depth): the file's flag, else its name."""
    return bool((entry or {}).get("oracle", name in ORACLES))


def strategy_label(name: str, entry: dict | None = None) -> str:
    """A strategy's name as shown: ``best-depth (oracle)`` for an oracle, else the name."""
    return f"{name} (oracle)" if is_oracle(name, entry) else name


def comparison_label(key: str, strategies: dict | None = None) -> str:
    """``plan_vs_best-depth`` -> ``plan vs best-depth (oracle)``."""
    return " vs ".join(strategy_label(part, (strategies or {}).get(part)) for part in key.split("_vs_"))


def plan_gain(transfer: dict, against: str = "scratch", style: MetricStyle | None = None) -> dict | None:
    """The plan's gain over ``against`` at the headline shots, over paired seeds.

    Returns ``mean``, ``ci`` (95% t-interval, inside [-1, 1] for fractions) and ``p``, both None below
    :data:`~paramreuse.stats.MIN_SEEDS` seeds, ``seeds``, ``enough_seeds``, ``shots`` and ``against``;
    None when the transfer runs lack the plan or ``against``.
    """
    strategies = transfer.get("strategies", {})
    if "plan" not in strategies or against not in strategies:
        return None
    diffs = [x - y for x, y in zip(strategies["plan"]["runs"], strategies[against]["runs"])]
    if not diffs:
        return None
    interval = seed_interval(diffs, style.difference_bounds if style else None)
    sig = transfer.get("significance", {}).get(f"plan_vs_{against}", {})
    enough = interval["enough_seeds"] and sig.get("enough_seeds", True)
    return {"mean": interval["mean"], "ci": interval["ci"], "p": sig.get("p") if enough else None,
            "seeds": len(diffs), "enough_seeds": enough, "shots": transfer.get("headline_shots"),
            "against": against}  # fmt: skip


def gain_clause(gain: dict | None, style: MetricStyle, against: str = "scratch") -> str:
    """``over training from scratch +0.100 accuracy (95% CI ... over 3 seeds, p = 0.01: a clear gain)``."""
    name = AGAINST.get(against, strategy_label(against))
    if gain is None:
        return f"over {name}: not run"
    value = f"over {name} {style.fmt(gain['mean'], True)} {style.name}"
    if not gain["enough_seeds"] or gain["ci"] is None:
        return f"{value} ({gain['seeds']} seeds: {not_enough_seeds(gain['seeds'])} for a CI or p-value)"
    p = "" if gain["p"] is None else f", p = {gain['p']:.2g}"
    lo, hi = gain["ci"]
    reading = "a clear gain" if lo > 0 else "a clear loss" if hi < 0 else "no clear difference"
    return (
        f"{value} (95% CI {style.fmt(lo, True)} to {style.fmt(hi, True)} over {gain['seeds']} seeds{p}: {reading})"
    )


def gains_clause(transfer: dict, style: MetricStyle) -> str:
    """The plan's expected gain over each of :data:`GAINS_AGAINST`, at the headline shots."""
    if "plan" not in transfer.get("strategies", {}):
        return "the transfer runs did not include the plan, so no gain is estimated"
    shots = transfer.get("headline_shots")
    head = "expected gain of the plan" + (f" with {shots} shots per class" if shots is not None else "")
    parts = [gain_clause(plan_gain(transfer, against, style), style, against) for against in GAINS_AGAINST]
    return f"{head}: " + ", ".join(parts)


def verdict_sentence(plan: dict, transfer: dict, style: MetricStyle) -> str:
    """One sentence: network reusable or not (J1), which units to reuse, and the expected gains with their CIs."""
    th = plan["thresholds"]
    status = "reusable" if plan["network_reusable"] else "not reusable"
    network = (
        f"The network is {status} as a whole (S's conv kernels in T: {style.name} drop "
        f"{style.fmt(plan['network_drop'], True)}, tolerance {th['network_tolerance']})"
    )
    return f"{network}; {units_clause(plan)}; {gains_clause(transfer, style)}."


def best_strategy(transfer: dict, oracles: bool = True) -> tuple[str, float] | None:
    """The strategy with the highest mean at the headline shots (the oracles left out unless ``oracles``)."""
    strategies = {n: s for n, s in transfer.get("strategies", {}).items() if oracles or not is_oracle(n, s)}
    if not strategies:
        return None
    name = max(strategies, key=lambda n: strategies[n]["mean"])
    return name, strategies[name]["mean"]
