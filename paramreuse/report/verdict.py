"""The study's answer in one sentence, composed from its result files (no recomputation)."""

from __future__ import annotations

from dataclasses import dataclass

from paramreuse.stats import Bounds, clip, difference_bounds, not_enough_seeds, seed_interval
from paramreuse.vocabulary import ORACLES, REUSE_DECISIONS, Decision, classes_text, network_votes, score_name

# Units of every task's metric (DESIGN.md's contract; the report reads files and imports no task code).
CONTRACT_UNITS = {"accuracy": "fraction", "dice": "fraction", "iou": "fraction", "psnr": "dB"}
# ORACLES: transfer.json flags them ("oracle": true); files written before the flag are read by these names.
GAINS_AGAINST = ("scratch", "finetune-all")  # what the verdict sentence weighs a plan that reuses S against
REUSE_STRATEGIES = ("finetune-all", "lp-ft", "l2-sp", "auto-rgn", "linear-probe")  # a scratch plan's alternatives
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
    """The metric's units: as given, else from the contract's table, or the values' range.

    An unknown metric is a fraction when every value lies in [0, 1].
    """
    if units:
        return MetricStyle(name, units)
    if name in CONTRACT_UNITS:
        return MetricStyle(name, CONTRACT_UNITS[name])
    return MetricStyle(name, "fraction" if values and all(0.0 <= v <= 1.0 for v in values) else "")


def unit_runs(names: list[str], order: list[str]) -> list[list[str]]:
    """``names`` grouped into runs of units consecutive in ``order`` (names not in it go last)."""
    index = {n: i for i, n in enumerate(order)}
    runs: list[list[str]] = []
    for name in sorted(names, key=lambda n: index.get(n, len(order))):
        if runs and index.get(name, -2) == index.get(runs[-1][-1], -9) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def compact(names: list[str], order: list[str]) -> str:
    """``a, b`` or ``first–last (k units)`` for runs of three or more consecutive units in ``order``."""
    parts = [f"{r[0]}–{r[-1]} ({len(r)} units)" if len(r) >= 3 else ", ".join(r) for r in unit_runs(names, order)]
    return ", ".join(parts)


def reuses(plan: dict) -> bool:
    """Whether a plan.json reuses S at all; a plan that re-initialises every unit trains from scratch."""
    return any(layer["decision"] in REUSE_DECISIONS for layer in plan["layers"])


def units_clause(plan: dict) -> str:
    """Which units to reuse, frozen or fine-tuned, and which to re-initialise."""
    order = [layer["name"] for layer in plan["layers"]]
    by = {d: [layer["name"] for layer in plan["layers"] if layer["decision"] == d] for d in Decision}
    if not reuses(plan):
        return "re-initialise every unit"
    parts = []
    if by[Decision.FROZEN]:
        parts.append(f"{compact(by[Decision.FROZEN], order)} frozen")
    if by[Decision.FINETUNED]:
        parts.append(f"{compact(by[Decision.FINETUNED], order)} fine-tuned")
    text = "reuse " + " and ".join(parts)
    if by[Decision.REINIT]:
        text += f", and re-initialise {compact(by[Decision.REINIT], order)}"
    return text


def decision_clause(plan: dict, style: MetricStyle) -> str:
    """The network decision with its evidence: reuse S, or train from scratch."""
    net = plan.get("network")
    if not net:
        lead = "Reuse S" if reuses(plan) else "Train the target from scratch"
        return (f"{lead} (the reuse-or-scratch decision is off or was not measured: nothing says whether a fresh "
                "network would do better; thresholds scratch_on = mean turns it on)")  # fmt: skip
    lo, hi = net["ci"]
    units = score_name(net.get("score")) or style.name
    evidence = (f"S-initialised training scored {style.fmt(net['difference'], True)} {units} against fresh "
                f"training on {net['n']} held-out shots (95% CI {style.fmt(lo, True)} to {style.fmt(hi, True)}, "
                f"cross-fitted; {short_rule(net)})")  # fmt: skip
    if not reuses(plan):
        return f"Train the target from scratch: {evidence}"
    return f"Reuse S: {evidence}"


def short_rule(net: dict) -> str:
    """The network rule in a few words (plan.json's ``network.rule`` says it in full)."""
    on, margin = net.get("scratch_on", "mean"), net.get("scratch_margin", 0.0)
    if on == "never":
        return "the decision was off: S is always reused"
    below = f"-{margin:g}" if margin else "0"
    if on == "se":
        return f"scratch when its mean is below {below} standard errors"
    return f"scratch when {'its mean' if on == 'mean' else 'its whole CI'} is below {below}"


def reuse_alternative(transfer: dict) -> str | None:
    """The best reuse strategy of the transfer runs (by mean), the alternative to training from scratch."""
    strategies = transfer.get("strategies", {})
    present = [name for name in REUSE_STRATEGIES if name in strategies]
    return max(present, key=lambda name: strategies[name]["mean"], default=None)


def clearly_better(transfer: dict, style: MetricStyle) -> tuple[str, dict] | None:
    """The strategy (no oracle) the study's own proof puts the plan clearly below, by the most, and the plan's
    gain against it; None when there is none."""
    strategies = transfer.get("strategies", {})
    if "plan" not in strategies:
        return None
    worse = []
    for name, entry in strategies.items():
        if name == "plan" or is_oracle(name, entry):
            continue
        gain = plan_gain(transfer, name, style)
        if gain is not None and gain["enough_seeds"] and gain["ci"] is not None and gain["ci"][1] < 0:
            worse.append((gain["mean"], name, gain))
    if not worse:
        return None
    _, name, gain = min(worse)
    return name, gain


def recommended_strategy(transfer: dict, style: MetricStyle) -> str:
    """What the verdict tells the user to train: the plan, unless the proof names another strategy to use instead."""
    better = clearly_better(transfer, style)
    return "plan" if better is None else better[0]


def proof_clause(transfer: dict, style: MetricStyle) -> str | None:
    """When the study's own proof shows the plan clearly below another strategy: which one, by how much, and to use it."""
    better = clearly_better(transfer, style)
    if better is None:
        return None
    name, gain = better
    lo, hi = gain["ci"]
    return (f"but the study's own proof puts the plan clearly below {strategy_label(name)} "
            f"({style.fmt(gain['mean'], True)} {style.name}, 95% CI {style.fmt(lo, True)} to {style.fmt(hi, True)} "
            f"over {gain['seeds']} seeds): use {strategy_label(name)} instead")  # fmt: skip


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


def gains_clause(transfer: dict, style: MetricStyle, plan: dict | None = None) -> str:
    """The recommendation's expected gain over its alternatives at the headline shots: a plan that reuses S
    against scratch and fine-tune-all; a plan that trains from scratch against the best reuse strategy."""
    if "plan" not in transfer.get("strategies", {}):
        return "the transfer runs did not include the plan, so no gain is estimated"
    shots = transfer.get("headline_shots")
    scratch = plan is not None and not reuses(plan)
    what = "training from scratch" if scratch else "the plan"
    head = f"expected gain of {what}" + (f" with {shots} shots per class" if shots is not None else "")
    against = [reuse_alternative(transfer) or "finetune-all"] if scratch else list(GAINS_AGAINST)
    parts = [gain_clause(plan_gain(transfer, other, style), style, other) for other in against]
    return f"{head}: " + ", ".join(parts)


def draws_votes(transfer: dict) -> dict | None:
    """The network decisions of the transfer's draws at the headline shots, counted (transfer.json's
    ``network_votes``, or counted from ``network`` in files written before it); None when not measured."""
    plan = transfer.get("strategies", {}).get("plan", {})
    if "network_votes" in plan:
        return plan["network_votes"]
    return network_votes(plan["network"]) if plan.get("network") else None


def draws_clause(transfer: dict) -> str | None:
    """When the draws disagree: the decision most of them made, with the counts; None when they agree."""
    votes = draws_votes(transfer)
    if votes is None or not votes["disagree"]:
        return None
    other = "scratch" if votes["majority"] == "reuse" else "reuse"
    label = {"reuse": "reuse S", "scratch": "train the target from scratch"}
    shots = transfer.get("headline_shots")
    return (f"Most draws say {label[votes['majority']]}: {votes[votes['majority']]} of {votes['draws']} draws of "
            f"{shots} shots per class did, {votes[other]} said {label[other]}, so which shots one has decides it")  # fmt: skip


def verdict_sentence(plan: dict, transfer: dict, style: MetricStyle) -> str:
    """One sentence: reuse S or train from scratch (with the evidence), which units, the expected gains with
    their CIs, and, when the study's own proof contradicts the plan, what to use instead. When the transfer's
    draws disagree on reuse or scratch, it opens with the decision most draws made and the counts, and the
    plan's decision follows as its own draw's."""
    draws = draws_clause(transfer)
    decision = decision_clause(plan, style)
    parts = [draws, f"the study's own draw: {decision[0].lower()}{decision[1:]}"] if draws else [decision]
    if reuses(plan):
        parts.append(units_clause(plan))
    parts.append(gains_clause(transfer, style, plan))
    proof = proof_clause(transfer, style)
    if proof:
        parts.append(proof)
    return "; ".join(parts) + "."


def best_strategy(transfer: dict, oracles: bool = True) -> tuple[str, float] | None:
    """The strategy with the highest mean at the headline shots (the oracles left out unless ``oracles``)."""
    strategies = {n: s for n, s in transfer.get("strategies", {}).items() if oracles or not is_oracle(n, s)}
    if not strategies:
        return None
    name = max(strategies, key=lambda n: strategies[n]["mean"])
    return name, strategies[name]["mean"]


def sides_text(results: dict) -> dict[str, str]:
    """S's and T's data as the study's output names them: classes by name, image counts; a given S as given."""
    source = results.get("models", {}).get("source", {})
    given = source.get("given") or results.get("config", {}).get("source", {}).get("checkpoint")
    data = results.get("data", {})
    return {"source": given_text(given, source.get("given_model", {})) if given else data_text(data.get("source", {})),
            "target": data_text(data.get("target", {}))}  # fmt: skip


def data_text(d: dict) -> str:
    """A data set: its classes by name (numbers in brackets) and its image counts."""
    if not d:
        return "not read"
    images = ", ".join(f"{d[split]} {split}" for split in ("train", "val", "test") if split in d)
    return f"{d.get('data')} classes {classes_text(d.get('classes', []), d.get('class_names', []))}; {images} images"


def given_text(path: str, model: dict) -> str:
    """A given S as it was given: the file or spec, not trained by the study, and what it records."""
    parts = [f"{path}, given (not trained by this study)"]
    if model:
        parts.append(f"architecture {model['arch']}, weights from {model['weights']}, a head of {model['outputs']} outputs")
    if model.get("trained_on"):
        classes = classes_text(model.get("classes", []), model.get("class_names", []))
        parts.append(f"trained on {model['trained_on']}" + (f" classes {classes}" if classes else ""))
    return "; ".join(parts)
