"""The network decision (reuse S or train from scratch) and the one verdict built on it, on hand-made evidence."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
from scipy import stats

from paramreuse.judge.network import NetworkChoice, NetworkEvidence, decide_network
from paramreuse.judge.plan import judge
from paramreuse.judge.verdicts import Thresholds
from paramreuse.report.verdict import metric_style, recommended_strategy, reuses, verdict_sentence
from tests.test_judge import UNITS, comparison, sweep

STYLE = metric_style("accuracy")
ZERO_ONE = Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct")  # round 4's rule


def evidence(reuse_correct: int, fresh_correct: int, n: int = 40) -> NetworkEvidence:
    """Held-out correctness of both networks on ``n`` images: the first k right, the rest wrong."""
    return NetworkEvidence(tuple([1.0] * reuse_correct + [0.0] * (n - reuse_correct)),
                           tuple([1.0] * fresh_correct + [0.0] * (n - fresh_correct)))  # fmt: skip


@pytest.mark.parametrize(
    "reuse, fresh, rule, margin, choice",
    [
        (30, 20, "mean", 0.0, "reuse"),  # S-initialised clearly better
        (20, 21, "mean", 0.0, "scratch"),  # below 0 on the estimate
        (20, 21, "mean", 0.05, "reuse"),  # within the margin: ties reuse S
        (20, 21, "ci", 0.0, "reuse"),  # the CI straddles 0: not decisive
        (5, 35, "ci", 0.0, "scratch"),  # decisively worse
        (5, 35, "never", 0.0, "reuse"),  # the decision switched off
    ],
)
def test_the_network_rule_reads_the_mean_or_the_ci(reuse, fresh, rule, margin, choice):
    decision = decide_network(evidence(reuse, fresh), scratch_on=rule, scratch_margin=margin, bounds=(-1.0, 1.0))
    assert decision.choice is NetworkChoice(choice)
    assert decision.difference == pytest.approx((reuse - fresh) / 40) and decision.n == 40
    assert decision.ci[0] <= decision.difference <= decision.ci[1]
    assert decision.reason.startswith(choice) and decision.scratch_on == rule


def test_the_ci_is_a_paired_bootstrap_of_per_image_differences():
    """Paired: the same 40 images, so the CI is that of the per-image differences, checked against scipy."""
    ev = evidence(30, 20)
    decision = decide_network(ev, scratch_on="ci", scratch_margin=0.0, seed=3)
    diffs = np.array(ev.reuse) - np.array(ev.fresh)
    ref = stats.bootstrap((diffs,), np.mean, n_resamples=1000, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(3)).confidence_interval  # fmt: skip
    assert decision.ci == pytest.approx((ref.low, ref.high))


def test_a_decision_round_trips_through_its_document():
    decision = decide_network(evidence(10, 30), scratch_on="mean", scratch_margin=0.0)
    assert type(decision).from_dict(decision.to_dict()) == decision


# Every kind of evidence: (network evidence, cumulative curve) x (proof: the plan clearly below a strategy or not).
NETWORK = {"reuse clear": (32, 20), "tie": (25, 25), "scratch": (10, 30), "not measured": None}
CURVES = {"prefix of 2": [(0.0, (-0.01, 0.01)), (0.0, (-0.01, 0.01)), (0.3, (0.2, 0.4))],
          "no prefix": [(0.3, (0.2, 0.4))] * 3}  # fmt: skip
PROOFS = {"plan best": {"plan": [0.80, 0.82, 0.84], "scratch": [0.70, 0.71, 0.75], "lp-ft": [0.79, 0.80, 0.82]},
          "plan clearly below lp-ft": {"plan": [0.70, 0.71, 0.72], "scratch": [0.69, 0.70, 0.70],
                                       "lp-ft": [0.80, 0.82, 0.83]}}  # fmt: skip


def _transfer(runs: dict) -> dict:
    entry = lambda r: {"mean": sum(r) / len(r), "ci": [min(r), max(r)], "runs": r}  # noqa: E731
    return {"headline_shots": 10, "strategies": {k: entry(v) for k, v in runs.items()}, "significance": {}}


@pytest.mark.parametrize("network, curve, proof", list(itertools.product(NETWORK, CURVES, PROOFS)))
def test_the_sentence_and_the_plan_agree_for_every_kind_of_evidence(network, curve, proof):
    measured = sweep(CURVES[curve])
    if NETWORK[network] is not None:
        measured = dataclasses.replace(measured, extra={"network_evidence": evidence(*NETWORK[network]).to_dict()})
    plan = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct")).to_dict()
    sentence = verdict_sentence(plan, _transfer(PROOFS[proof]), STYLE)
    decisions = [layer["decision"] for layer in plan["layers"] if layer["name"] != "fc"]
    scratch = network == "scratch"
    # the plan follows the network decision ...
    assert plan["decision"] == ("scratch" if scratch else "reuse") and reuses(plan) is not scratch
    assert (set(decisions) == {"reinit"}) is scratch
    assert (plan["network"] is None) is (network == "not measured")
    # ... and the sentence says what the plan does, never the opposite
    assert sentence.startswith("Train the target from scratch" if scratch else "Reuse S")
    assert ("frozen" in sentence) == ("reuse-frozen" in decisions)
    assert ("reuse c1" in sentence) is not scratch and "as a whole" not in sentence
    # the gain is that of the recommendation over its alternative
    assert ("expected gain of training from scratch" in sentence) is scratch
    assert ("over training from scratch" in sentence) is not scratch
    # the study's own proof, when it puts the plan clearly below a strategy, names what to use
    assert ("use lp-ft instead" in sentence) == (proof == "plan clearly below lp-ft")
    # ... and the model the study writes (model.safetensors) is the one the sentence recommends
    assert recommended_strategy(_transfer(PROOFS[proof]), STYLE) == ("lp-ft" if "lp-ft" in proof else "plan")
    if NETWORK[network] is not None:
        assert f"on {40} held-out shots" in sentence


def test_the_mean_rule_trains_from_scratch_only_past_its_margin_and_can_be_turned_off():
    """Round 4's rule (0/1 scores, the mean below -0.05): a tie within the margin reuses S; off says so."""
    assert Thresholds().decides_network
    for reuse, fresh, decision in ((5, 35, "scratch"), (20, 21, "reuse"), (20, 23, "scratch")):
        measured = dataclasses.replace(sweep(CURVES["no prefix"]), extra={"network_evidence": evidence(reuse, fresh).to_dict()})
        made = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=ZERO_ONE).to_dict()
        assert made["decision"] == decision
    off = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=Thresholds(scratch_on="never")).to_dict()
    assert off["decision"] == "reuse" and off["network"]["reason"].startswith("reuse: the network decision is off")
    unmeasured = judge(sweep(CURVES["no prefix"]), comparison((0.1,) * 4), head="fc").to_dict()
    assert verdict_sentence(unmeasured, _transfer(PROOFS["plan best"]), STYLE).startswith(
        "Reuse S (the reuse-or-scratch decision is off")


def test_a_unit_frozen_against_its_own_j2_row_says_why():
    """The prefix is judged on units 1..k together; a unit whose own row fails says so in its reason."""
    curve = [(0.0, (-0.01, 0.01)), (0.0, (-0.01, 0.01)), (0.3, (0.2, 0.4))]
    units = {"c1": (0.5, (0.36, 0.65)), "c2": (0.0, (-0.01, 0.01))}
    plan = judge(sweep(curve, units=units), comparison((0.1,) * 4), head="fc")
    layers = {layer.name: layer for layer in plan.layers}
    assert layers["c1"].decision == "reuse-frozen" and layers["c1"].j2 == "not reusable"
    assert "although its own J2 row is not reusable" in layers["c1"].reason
    assert layers["c2"].decision == "reuse-frozen" and "although" not in layers["c2"].reason


@pytest.mark.parametrize("drop, ci, expected", [(0.0, (-0.01, 0.01), True), (0.1, (0.05, 0.15), False), (0.0, (-0.4, 0.0), True),
                                                (0.01, (-0.05, 0.08), None)])  # fmt: skip
def test_j1_is_undecided_when_its_ci_straddles_the_tolerance(drop, ci, expected):
    measured = sweep([(0.0, (0.0, 0.0))] * 3, network=drop)
    rows = tuple(dataclasses.replace(r, ci=ci) if r.kind == "network" else r for r in measured.rows)
    plan = judge(dataclasses.replace(measured, rows=rows), comparison((0.1,) * 4), head="fc")
    assert plan.network_reusable is expected
    assert plan.network_j1 == {True: "reusable", False: "not reusable", None: "undecided"}[expected]
    assert set(UNITS[:3]) <= {layer.name for layer in plan.layers}


@pytest.mark.parametrize("draws, opening", [
    (["reuse", "scratch", "scratch", "reuse", "scratch"],
     "Most draws say train the target from scratch: 3 of 5 draws of 10 shots per class did, 2 said reuse S"),
    (["scratch", "reuse", "reuse", "reuse", "scratch"],
     "Most draws say reuse S: 3 of 5 draws of 10 shots per class did, 2 said train the target from scratch"),
    (["reuse", "scratch"], "Most draws say reuse S: 1 of 2 draws"),  # a tie reuses S, as the network rule does
])
def test_a_verdict_whose_draws_disagree_states_what_most_draws_decided_with_the_count(draws, opening):
    """Issue 29: the verdict no longer takes the first draw's decision alone; transfer.json counts them."""
    from paramreuse.transfer.summary import summarise

    measured = dataclasses.replace(sweep(CURVES[next(iter(CURVES))]), extra={"network_evidence": evidence(30, 20).to_dict()})
    plan = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct")).to_dict()
    assert plan["network"]["choice"] == "reuse"  # the study's own draw (the first) reused S
    grid = dataclasses.make_dataclass("Grid", [("strategies", tuple), ("shots", tuple), ("seeds", int)])(("plan",), (10,), len(draws))
    runs = {f"10:{s}:plan": {"strategy": "plan", "shots": 10, "seed": s, "value": 0.5 + s / 100,
                            "network": {"choice": choice}} for s, choice in enumerate(draws)}  # fmt: skip
    transfer = {"headline_shots": 10, **summarise(runs, grid, 10)}
    votes = transfer["strategies"]["plan"]["network_votes"]
    assert votes["reuse"] == draws.count("reuse") and votes["scratch"] == draws.count("scratch")
    sentence = verdict_sentence(plan, transfer, STYLE)
    assert sentence.startswith(opening), sentence
    assert "the study's own draw: reuse S: S-initialised training scored" in sentence
    del transfer["strategies"]["plan"]["network_votes"]  # a transfer.json written before the count: the same sentence
    assert verdict_sentence(plan, transfer, STYLE) == sentence


def test_a_verdict_whose_draws_agree_says_nothing_about_draws():
    measured = dataclasses.replace(sweep(CURVES[next(iter(CURVES))]), extra={"network_evidence": evidence(30, 20).to_dict()})
    plan = judge(measured, comparison((0.1,) * 4), head="fc", thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct")).to_dict()
    transfer = _transfer(PROOFS[next(iter(PROOFS))])
    transfer["strategies"]["plan"]["network"] = ["reuse"] * 3
    sentence = verdict_sentence(plan, transfer, STYLE)
    assert sentence.startswith("Reuse S: S-initialised") and "draws" not in sentence
