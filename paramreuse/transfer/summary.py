"""The transfer grid's summary: means, CIs and paired tests per strategy and shots (``transfer.json``)."""

from __future__ import annotations

from typing import Protocol

from paramreuse.stats import paired_test, seed_interval
from paramreuse.vocabulary import ORACLES, network_votes


class GridShape(Protocol):
    """What the summary needs of a :class:`~paramreuse.transfer.config.TransferConfig`: the grid's axes."""

    strategies: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: int

COMPARED = ("scratch", "finetune-all", "lp-ft", "l2-sp", "auto-rgn")  # the plan's paired tests, against each


def summarise(runs: dict[str, dict], config: GridShape, headline: int, bounds=None) -> dict:
    """Means, CIs (inside the metric's ``bounds``; none below 3 seeds) and paired tests per strategy
    and shots; top-level keys describe ``headline`` shots."""
    by = {(r["strategy"], r["shots"], r["seed"]): r for r in runs.values()}
    seeds = list(range(config.seeds))
    strategies = {}
    for name in config.strategies:
        per_shots = {}
        for n in config.shots:
            values = [by[(name, n, s)]["value"] for s in seeds]
            per_shots[str(n)] = seed_interval(values, bounds) | {"runs": values}
            if name in ("best-depth", "plan") and by[(name, n, 0)].get("depth") is not None:
                per_shots[str(n)]["depths"] = [by[(name, n, s)]["depth"] for s in seeds]
            if name == "plan" and by[(name, n, 0)].get("network"):  # the network decision of every draw
                per_shots[str(n)]["network"] = [by[(name, n, s)]["network"]["choice"] for s in seeds]
                per_shots[str(n)]["network_votes"] = network_votes(per_shots[str(n)]["network"])
                per_shots[str(n)]["network_evidence"] = [by[(name, n, s)]["network"] for s in seeds]
                if "network_outputs" in by[(name, n, 0)]:  # each arm's held-out outputs: any score can be replayed
                    per_shots[str(n)]["network_outputs"] = [by[(name, n, s)]["network_outputs"] for s in seeds]
                if "diagnostics" in by[(name, n, 0)]:
                    per_shots[str(n)]["diagnostics"] = [by[(name, n, s)]["diagnostics"] for s in seeds]
            for cost in ("seconds", "plan_seconds", "candidate_seconds"):  # compute, for side-by-side cost ratios
                if cost in by[(name, n, 0)]:
                    per_shots[str(n)][cost] = [by[(name, n, s)][cost] for s in seeds]
        strategies[name] = per_shots[str(headline)] | {"by_shots": per_shots, "oracle": name in ORACLES}
    significance = {}
    if "plan" in config.strategies:
        for other in (o for o in COMPARED if o in config.strategies):
            per_shots = {str(n): paired_test(strategies["plan"]["by_shots"][str(n)]["runs"], strategies[other]["by_shots"][str(n)]["runs"])
                         for n in config.shots}  # fmt: skip
            significance[f"plan_vs_{other}"] = per_shots[str(headline)] | {"by_shots": per_shots}
    return {"strategies": strategies, "significance": significance}
