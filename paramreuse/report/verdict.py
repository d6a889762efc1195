"""The study's answer in one sentence, composed from its result files (no recomputation)."""

from __future__ import annotations

from dataclasses import dataclass

from paramreuse.stats import t_interval

REUSE_DECISIONS = ("reuse-frozen", "reuse-finetuned")
CONTRACT_UNITS = {"accuracy": "fraction", "dice": "fraction", "iou": "fraction", "psnr": "dB"}  # DESIGN.md


@dataclass(frozen=True)
class MetricStyle:
    """How to print and plot a metric: its name and units (``fraction`` in [0, 1], ``dB``, ...)."""

    name: str
    units: str

    @property
    def bounded(self) -> bool:
        return self.units == "fraction"

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


def plan_gain(transfer: dict, against: str = "scratch") -> dict | None:
    """The plan's gain over ``against`` at the headline shots: mean, 95% t-interval over paired seeds, p."""
    strategies = transfer.get("strategies", {})
    if "plan" not in strategies or against not in strategies:
        return None
    a, b = strategies["plan"]["runs"], strategies[against]["runs"]
    diffs = [x - y for x, y in zip(a, b)]
    if not diffs:
        return None
    lo, hi = t_interval(diffs)
    sig = transfer.get("significance", {}).get(f"plan_vs_{against}", {})
    return {"mean": sum(diffs) / len(diffs), "ci": [lo, hi], "p": sig.get("p"), "seeds": len(diffs),
            "shots": transfer.get("headline_shots"), "against": against}  # fmt: skip


def gain_clause(gain: dict | None, style: MetricStyle) -> str:
    if gain is None:
        return "the transfer runs did not include the plan and scratch, so no gain is estimated"
    p = "" if gain["p"] is None else f", p = {gain['p']:.2g}"
    lo, hi = gain["ci"]
    reading = "a clear gain" if lo > 0 else "a clear loss" if hi < 0 else "no clear difference"
    shots = f" with {gain['shots']} shots per class" if gain["shots"] is not None else ""
    return (
        f"expected gain of the plan over training from {gain['against']}{shots}: {style.fmt(gain['mean'], True)} "
        f"{style.name} (95% CI {style.fmt(lo, True)} to {style.fmt(hi, True)} over {gain['seeds']} seeds{p}: {reading})"
    )


def verdict_sentence(plan: dict, transfer: dict, style: MetricStyle) -> str:
    """One sentence: network reusable or not (J1), which units to reuse, and the expected gain with its CI."""
    th = plan["thresholds"]
    status = "reusable" if plan["network_reusable"] else "not reusable"
    network = (
        f"The network is {status} as a whole (S's conv kernels in T: {style.name} drop "
        f"{style.fmt(plan['network_drop'], True)}, tolerance {th['network_tolerance']})"
    )
    return f"{network}; {units_clause(plan)}; {gain_clause(plan_gain(transfer), style)}."


def best_strategy(transfer: dict) -> tuple[str, float] | None:
    """The strategy with the highest mean at the headline shots."""
    strategies = transfer.get("strategies", {})
    if not strategies:
        return None
    name = max(strategies, key=lambda n: strategies[n]["mean"])
    return name, strategies[name]["mean"]
