"""The first box (report/answer.py): four short lines, and a fifth when the study's own numbers point elsewhere."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import stats

from paramreuse.judge.plan import judge
from paramreuse.judge.verdicts import Thresholds
from paramreuse.report.answer import TRACK_RECORD, Answer, answer_box
from paramreuse.report.verdict import metric_style
from tests.test_judge import comparison, sweep
from tests.test_network import CURVES, NETWORK, PROOFS, evidence
from tests.test_network import _transfer as network_transfer

STYLE = metric_style("accuracy")
UNITS = ["features.0.0", "features.1.0", "features.3.0", "features.4.0", "features.6.0", "features.7.0", "fc.0", "head"]
MAX_WORDS = 60


def plan(decision: str, network: tuple[float, float, float] | None = (0.04, -0.03, 0.11)) -> dict:
    """A plan.json of the default study's builtin CNN: two frozen units then fine-tuned ones, or all re-initialised."""
    if decision == "reuse":
        decisions = ["reuse-frozen"] * 2 + ["reuse-finetuned"] * 5 + ["reinit"]
    else:
        decisions = ["reinit"] * len(UNITS)
    net = None if network is None else {"difference": network[0], "ci": list(network[1:]), "n": 50,
                                        "scratch_on": "mean", "scratch_margin": 0.05}  # fmt: skip
    return {"decision": decision, "network": net,
            "layers": [{"name": n, "decision": d} for n, d in zip(UNITS, decisions)]}  # fmt: skip


def transfer(runs: dict[str, list[float]], choices: list[str] | None = None, p: dict | None = None) -> dict:
    """A transfer.json at 10 shots over the given runs per strategy; ``choices``: each draw's network decision."""
    entry = lambda r: {"mean": sum(r) / len(r), "ci": [min(r), max(r)], "runs": r}  # noqa: E731
    strategies = {k: entry(v) for k, v in runs.items()}
    if choices:
        strategies["plan"]["network"] = choices
    significance = {f"plan_vs_{k}": {"p": v, "test": "paired t", "enough_seeds": True} for k, v in (p or {}).items()}
    return {"headline_shots": 10, "strategies": strategies, "significance": significance}


def results(test_gain: float) -> dict:
    """A results.json's model and T minus T_scratch on the test set."""
    return {"gains": {"target_vs_scratch": {"mean": test_gain, "ci": [test_gain - 0.05, test_gain + 0.04], "n": 500}},
            "model": {"path": "runs/study/model.safetensors", "strategy": "plan", "seed": 0, "shots": 10,
                      "test_metric": 0.855}}  # fmt: skip


# The grid at 10 shots, 5 seeds: the plan ahead; a reuse strategy ahead (not clearly); scratch clearly ahead.
GRIDS = {
    "plan ahead": {"plan": [0.86, 0.85, 0.87, 0.86, 0.85], "scratch": [0.84, 0.83, 0.85, 0.84, 0.84],
                   "lp-ft": [0.85, 0.85, 0.86, 0.85, 0.84], "finetune-all": [0.85, 0.84, 0.86, 0.85, 0.83],
                   "best-depth": [0.90, 0.90, 0.90, 0.90, 0.90]},
    "lp-ft ahead": {"plan": [0.85, 0.84, 0.86, 0.85, 0.84], "scratch": [0.83, 0.82, 0.84, 0.83, 0.82],
                    "lp-ft": [0.86, 0.83, 0.88, 0.85, 0.86], "finetune-all": [0.85, 0.84, 0.85, 0.84, 0.83],
                    "best-depth": [0.80, 0.80, 0.80, 0.80, 0.80]},
    "scratch clearly ahead": {"plan": [0.64, 0.65, 0.63, 0.66, 0.65], "scratch": [0.68, 0.69, 0.67, 0.69, 0.68],
                              "lp-ft": [0.62, 0.61, 0.64, 0.63, 0.62], "finetune-all": [0.63, 0.64, 0.62, 0.63, 0.63]},
}  # fmt: skip
DRAWS = {"no record": None, "unanimous": 5, "split": 3}  # draws (of 5) that made the plan's decision
TEST_GAINS = {"T ahead": 0.03, "T_scratch ahead": -0.083}


@pytest.mark.parametrize("decision, grid, draws, test_gain",
                         list(itertools.product(("reuse", "scratch"), GRIDS, DRAWS, TEST_GAINS)))  # fmt: skip
def test_the_box_has_four_short_lines_and_the_fifth_exactly_when_the_numbers_point_elsewhere(decision, grid, draws,
                                                                                             test_gain):  # fmt: skip
    made = DRAWS[draws]
    other = "scratch" if decision == "reuse" else "reuse"
    choices = None if made is None else [decision] * made + [other] * (5 - made)
    network = (0.04, -0.03, 0.11) if decision == "reuse" else (-0.12, -0.2, -0.05)
    runs = dict(GRIDS[grid])
    if decision == "scratch":  # a scratch plan trains exactly as the scratch strategy does
        runs["plan"] = runs["scratch"]
    box = answer_box(plan(decision, network), transfer(runs, choices, {"scratch": 0.11, "lp-ft": 0.3}), STYLE,
                     results(TEST_GAINS[test_gain]))  # fmt: skip
    assert box.words() <= MAX_WORDS, box.text()
    labels = [label for label, _ in box.lines()]
    assert labels[:4] == ["Decision", "Evidence", "Expected gain", "Model"]
    # the decision, with the draws that made it when they disagree
    assert box.decision.startswith("Reuse S" if decision == "reuse" else "Train from scratch")
    reused = "freeze features.0.0–features.1.0; fine-tune features.3.0–fc.0; fresh head."
    assert box.decision.endswith(reused if decision == "reuse" else "re-initialise every unit.")
    assert ("(3/5 draws):" in box.decision) is (draws == "split")
    # the evidence and how often such evidence was right on the benchmark's held-out pairs
    right, total = TRACK_RECORD[10]["draws"]
    assert box.evidence.endswith(f", 50 images); right on {right}/{total} benchmark draws.")
    assert ("minus fresh +0.040 (95% CI -0.030 to +0.110" in box.evidence) is (decision == "reuse")
    # the gain over the alternative, with its CI and seeds
    alternative = "scratch" if decision == "reuse" else max(("lp-ft", "finetune-all"), key=lambda n: sum(runs[n]))
    assert box.gain.startswith("+" if sum(runs["plan"]) > sum(runs[alternative]) else "-")
    assert f" over {alternative} (CI " in box.gain and box.gain.endswith(", 5 seeds).")
    assert box.model == "runs/study/model.safetensors; load: paramreuse.load_checkpoint(path)."
    # the fifth line: the grid's best non-oracle strategy above the plan, or T - T_scratch of the other sign
    rivals = {n: sum(r) for n, r in runs.items() if n not in ("plan", "best-depth") and not (decision == "scratch" and n == "scratch")}
    grid_elsewhere = max(rivals.values()) > sum(runs["plan"])
    test_elsewhere = (TEST_GAINS[test_gain] < 0) == (decision == "reuse")
    assert (box.elsewhere is not None) is (grid_elsewhere or test_elsewhere)
    if grid_elsewhere:
        best = max(rivals, key=rivals.get)
        diffs = [a - b for a, b in zip(runs["plan"], runs[best])]  # use it when the plan's paired 95% CI is below 0
        clearly = stats.t.interval(0.95, len(diffs) - 1, np.mean(diffs), stats.sem(diffs))[1] < 0
        assert box.elsewhere.startswith(f"{best} {STYLE.fmt(sum(runs[best]) / 5)} vs plan {STYLE.fmt(sum(runs['plan']) / 5)}")
    if test_elsewhere:
        assert f"T-T_scratch {STYLE.fmt(TEST_GAINS[test_gain], True)} (CI " in box.elsewhere
    if box.elsewhere:  # what to try: the grid's best first, then what T-T_scratch points to; "use" for a clear one
        tries = list(dict.fromkeys(([best] if grid_elsewhere else []) +
                                   ([("scratch" if decision == "reuse" else "finetune-all")] if test_elsewhere else [])))
        verbs = ["use" if grid_elsewhere and clearly and name == best else "try" for name in tries]
        said = box.elsewhere.rpartition(": ")[2].rstrip(".").replace(" or ", " ").split()
        assert next(w for w in said if w in ("use", "try")) == verbs[0] and [w for w in said if w not in ("use", "try")] == tries
        assert ("use" in said) is ("use" in verbs) and said.count("try") == min(verbs.count("try"), 1)


def test_the_issues_own_folder_example_says_where_the_numbers_point():
    """Issue 28: the box said "Reuse S" while T - T_scratch was -0.083 and scratch led the grid, 0.678 vs 0.646."""
    runs = {"plan": [0.60, 0.66, 0.63, 0.68, 0.66], "scratch": [0.70, 0.62, 0.71, 0.69, 0.67]}
    box = answer_box(plan("reuse"), transfer(runs, p={"scratch": 0.11}), STYLE, results(-0.083))
    assert box.elsewhere == "scratch 0.678 vs plan 0.646 (p=0.11); T-T_scratch -0.083 (CI -0.133 to -0.043): try scratch."
    assert box.words() <= MAX_WORDS


def test_without_transfer_runs_or_a_model_the_box_says_how_to_get_them():
    """`plan` has no transfer runs and writes no model: the box says which command measures the gain and trains one."""
    box = answer_box(plan("reuse"), None, STYLE)
    assert box.gain.startswith("not measured: `paramreuse transfer`")
    assert box.model.startswith("none yet: `paramreuse apply PLAN")
    assert box.elsewhere is None and box.words() <= MAX_WORDS


def test_the_evidence_says_when_the_decision_was_not_measured_and_cites_the_nearest_benchmark_shots():
    assert answer_box(plan("reuse", None), None, STYLE).evidence.startswith("none: the reuse-or-scratch decision is off")
    at20 = answer_box(plan("reuse"), {"headline_shots": 20, "strategies": {}}, STYLE).evidence
    right, total = TRACK_RECORD[10]["draws"]
    assert at20.endswith(f"right on {right}/{total} benchmark draws at 10 shots.")


def test_two_seeds_give_no_ci_in_the_gain():
    runs = {"plan": [0.8, 0.82], "scratch": [0.7, 0.75]}
    assert answer_box(plan("reuse"), transfer(runs), STYLE).gain == "+0.085 over scratch (2 seeds, too few for a CI)."


def test_the_box_round_trips_through_its_document():
    box = answer_box(plan("reuse"), transfer(GRIDS["lp-ft ahead"]), STYLE, results(-0.02))
    assert Answer.from_dict(box.to_dict()) == box and box.elsewhere
    assert box.text().splitlines()[0] == f"Decision: {box.decision}"


@pytest.mark.parametrize("network, curve, proof", list(itertools.product(NETWORK, CURVES, PROOFS)))
def test_the_box_and_the_plan_agree_for_every_kind_of_evidence(network, curve, proof):
    """tests/test_network.py's table, through the plan rule itself: the box says what plan.json does, at most 60
    words, and its fifth line appears exactly when the proof puts a strategy above the plan."""
    measured = sweep(CURVES[curve])
    if NETWORK[network] is not None:
        measured = dataclasses.replace(measured, extra={"network_evidence": evidence(*NETWORK[network]).to_dict()})
    made = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct")).to_dict()
    box = answer_box(made, network_transfer(PROOFS[proof]), STYLE)
    assert box.decision.startswith("Reuse S" if made["decision"] == "reuse" else "Train from scratch")
    assert ("freeze" in box.decision) == any(layer["decision"] == "reuse-frozen" for layer in made["layers"])
    assert box.evidence.startswith("none:") is (network == "not measured")
    assert (box.elsewhere == "lp-ft 0.817 vs plan 0.710 (3 seeds): use lp-ft.") is (proof == "plan clearly below lp-ft")
    assert box.elsewhere is None or proof == "plan clearly below lp-ft"
    assert box.words() <= MAX_WORDS
