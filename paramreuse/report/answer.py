"""The answer at a glance: the first box of the report and of ``study``'s and ``plan``'s output, in four
short lines (decision, evidence, expected gain, model) and a fifth when the study's own measurements point
elsewhere. Composed from the result files (no recomputation); the long rule text goes below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from paramreuse.report.verdict import (
    MetricStyle,
    clearly_better,
    is_oracle,
    plan_gain,
    reuse_alternative,
    reuses,
    strategy_label,
    unit_runs,
)
from paramreuse.vocabulary import Decision, score_name

# How often the network decision was right on the benchmark's held-out pairs, per shots per class:
# bench/README.md, "Sharper evidence", round 5 (pairs X1-X8, never used to choose the score or the rule).
# ``draws``: single draws whose decision agreed with their own better of scratch and the reuse plan;
# ``pairs``: pairs with a clear winner (p < 0.05) on which the decision most draws made was that winner.
# The box cites ``draws`` (plan.json's decision is one draw's); ``pairs`` is the README's "How far to trust it".
# bench/scores.py re-measures them: update these numbers from its tables, here and nowhere else in the code.
TRACK_RECORD = {5: {"draws": (25, 40), "pairs": (1, 3)}, 10: {"draws": (22, 40), "pairs": (1, 2)}}
LOAD = "paramreuse.load_checkpoint(path)"
# The box's fields and the label each line is shown with, in order.
LABELS = (("decision", "Decision"), ("evidence", "Evidence"), ("gain", "Expected gain"), ("model", "Model"),
          ("elsewhere", "But"))  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """The first box, line by line (each a short sentence without its label); ``elsewhere`` is None unless the
    study's own measurements point elsewhere than the decision."""

    decision: str
    evidence: str
    gain: str
    model: str
    elsewhere: str | None = None

    def entries(self) -> list[tuple[str, str, str]]:
        """(field, label, text) of every line shown, in order."""
        return [(key, label, getattr(self, key)) for key, label in LABELS if getattr(self, key)]

    def lines(self) -> list[tuple[str, str]]:
        """(label, text) of every line shown, in order."""
        return [(label, text) for _, label, text in self.entries()]

    def text(self) -> str:
        """The box as plain text, one ``Label: text`` line each."""
        return "\n".join(f"{label}: {text}" for label, text in self.lines())

    def words(self) -> int:
        """How many words the box shows, its labels included."""
        return len(self.text().split())

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> Answer:
        return cls(**{key: doc.get(key) for key, _ in LABELS})


def answer_box(plan: dict, transfer: dict | None, style: MetricStyle, results: dict | None = None) -> Answer:
    """The box of a plan (plan.json), its transfer runs (transfer.json; None or {} when none ran) and, for a
    study, its results.json (T minus T_scratch on the test set, the recommended model)."""
    transfer = transfer or {}
    results = results or {}
    return Answer(
        decision=decision_line(plan, transfer),
        evidence=evidence_line(plan, transfer, style),
        gain=gain_line(plan, transfer, style),
        model=model_line(results),
        elsewhere=elsewhere_line(plan, transfer, results, style),
    )


def decision_line(plan: dict, transfer: dict) -> str:
    """``Reuse S: freeze c1–c2; fine-tune c3–c5; fresh fc.`` or ``Train from scratch: ...``; with the count of
    the transfer runs' draws that made the decision when they disagree (``Reuse S (3/5 draws): ...``)."""
    draws = draws_count(plan, transfer)
    count = f" ({draws[0]}/{draws[1]} draws)" if draws and draws[0] != draws[1] else ""
    if not reuses(plan):
        return f"Train from scratch{count}: re-initialise every unit."
    order = [layer["name"] for layer in plan["layers"]]
    by = {d: [layer["name"] for layer in plan["layers"] if layer["decision"] == d] for d in Decision}
    verbs = ((Decision.FROZEN, "freeze"), (Decision.FINETUNED, "fine-tune"), (Decision.REINIT, "fresh"))
    parts = [f"{verb} {spans(by[d], order)}" for d, verb in verbs if by[d]]
    return f"Reuse S{count}: {'; '.join(parts)}."


def spans(names: list[str], order: list[str]) -> str:
    """``c1`` or ``c3–c9`` for a run of consecutive units in ``order``, runs joined by commas (the units one by
    one are in the plan table)."""
    return ", ".join(run[0] if len(run) == 1 else f"{run[0]}–{run[-1]}" for run in unit_runs(names, order))


def draws_count(plan: dict, transfer: dict) -> tuple[int, int] | None:
    """How many of the transfer runs' draws (seeds at the headline shots) made the plan's network decision,
    of how many; None when the runs did not record it."""
    choices = transfer.get("strategies", {}).get("plan", {}).get("network")
    if not choices:
        return None
    made = "reuse" if reuses(plan) else "scratch"
    return sum(choice == made for choice in choices), len(choices)


def track_record(shots: int | None) -> str:
    """``right on 26/30 benchmark draws`` (of pairs held out from choosing the rule), at the nearest shots the
    benchmark measured."""
    measured = min(TRACK_RECORD, key=lambda n: (abs(n - shots), n)) if shots is not None else max(TRACK_RECORD)
    right, total = TRACK_RECORD[measured]["draws"]
    at = "" if measured == shots else f" at {measured} shots"
    return f"right on {right}/{total} benchmark draws{at}"


def evidence_line(plan: dict, transfer: dict, style: MetricStyle) -> str:
    """The network decision's evidence (S-initialised minus fresh training on the held-out shots) and how often
    such evidence was right on the benchmark's held-out pairs."""
    net = plan.get("network")
    if not net:
        return "none: the reuse-or-scratch decision is off or was not measured."
    lo, hi = net["ci"]
    shots = transfer.get("headline_shots", plan.get("shots"))
    units = score_name(net.get("score"))
    units = f" {units}" if units else ""
    return (f"S-initialised minus fresh {style.fmt(net['difference'], True)}{units} (95% CI {style.fmt(lo, True)} to "
            f"{style.fmt(hi, True)}, {net['n']} images); {track_record(shots)}.")  # fmt: skip


def gain_line(plan: dict, transfer: dict, style: MetricStyle) -> str:
    """The recommendation's gain over its alternative at the headline shots: a plan that reuses S over scratch,
    a scratch plan over the best reuse strategy; mean, 95% CI and seeds."""
    if "plan" not in transfer.get("strategies", {}):
        return "not measured: `paramreuse transfer` trains the plan against the alternatives."
    against = "scratch" if reuses(plan) else (reuse_alternative(transfer) or "finetune-all")
    gain = plan_gain(transfer, against, style)
    if gain is None:
        return f"not measured: the transfer runs lack {against}."
    head = f"{style.fmt(gain['mean'], True)} over {strategy_label(against)}"  # in the metric's units (dB named)
    if not gain["enough_seeds"] or gain["ci"] is None:
        return f"{head} ({gain['seeds']} seeds, too few for a CI)."
    lo, hi = gain["ci"]
    return f"{head} (CI {style.fmt(lo, True)} to {style.fmt(hi, True)}, {gain['seeds']} seeds)."


def model_line(results: dict) -> str:
    """Where the recommended model is and how to load it; how to get one when the study wrote none."""
    model = results.get("model")
    if not model:
        return "none yet: `paramreuse apply PLAN --source S --data DATA` trains one."
    which = "" if model["strategy"] == "plan" else f" ({model['strategy']}, not the plan)"
    return f"{model['path']}{which}; load: {LOAD}."


def elsewhere_line(plan: dict, transfer: dict, results: dict, style: MetricStyle) -> str | None:
    """When the study's own measurements point elsewhere than the decision, significant or not: the grid's best
    non-oracle strategy above the plan, or T minus T_scratch on the test set of the other sign; None otherwise."""
    found, tries = [], []
    rival = grid_rival(plan, transfer)
    if rival:
        name, value = rival
        gain = plan_gain(transfer, name, style)  # its p: the paired test's, from three seeds on
        p = f"p={gain['p']:.2g}" if gain["p"] is not None else f"{gain['seeds']} seeds"
        plan_value = transfer["strategies"]["plan"]["mean"]
        found.append(f"{strategy_label(name)} {style.fmt(value)} vs plan {style.fmt(plan_value)} ({p})")
        tries.append(name)
    test = (results.get("gains") or {}).get("target_vs_scratch")
    if test and test.get("mean") is not None and (test["mean"] < 0) == reuses(plan) and test["mean"] != 0:
        ci = test.get("ci")
        interval = f" (CI {style.fmt(ci[0], True)} to {style.fmt(ci[1], True)})" if ci else ""
        found.append(f"T-T_scratch {style.fmt(test['mean'], True)}{interval}")  # on the test set (README)
        tries.append("scratch" if reuses(plan) else "finetune-all")
    if not found:
        return None
    clear = clearly_better(transfer, style)  # "use" it: the plan's paired CI lies below it
    verbs: list[tuple[str, list[str]]] = []  # "try lp-ft or scratch", "use lp-ft or try finetune-all"
    for name in dict.fromkeys(tries):
        verb = "use" if clear and clear[0] == name else "try"
        if verbs and verbs[-1][0] == verb:
            verbs[-1][1].append(name)
        else:
            verbs.append((verb, [name]))
    return f"{'; '.join(found)}: {' or '.join(f'{verb} ' + ' or '.join(names) for verb, names in verbs)}."


def grid_rival(plan: dict, transfer: dict) -> tuple[str, float] | None:
    """The transfer grid's best strategy at the headline shots (no oracle, not the plan itself) when its mean is
    above the plan's; for a scratch plan, ``scratch`` is the plan and no rival."""
    strategies = transfer.get("strategies", {})
    if "plan" not in strategies:
        return None
    same = {"plan"} | (set() if reuses(plan) else {"scratch"})
    rivals = {n: s["mean"] for n, s in strategies.items() if n not in same and not is_oracle(n, s)}
    if not rivals:
        return None
    best = max(rivals, key=rivals.get)
    return (best, rivals[best]) if rivals[best] > strategies["plan"]["mean"] else None
