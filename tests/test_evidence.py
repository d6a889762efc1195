"""Per-image evidence scores (paramreuse.judge.evidence), checked against numpy references written here."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paramreuse.judge.evidence import held_out_outputs, image_scores, paired_scores, temperature
from paramreuse.judge.network import NetworkEvidence, decide_network
from paramreuse.judge.plan import network_decision
from paramreuse.judge.verdicts import Thresholds
from paramreuse.report.answer import evidence_line
from paramreuse.report.verdict import decision_clause, metric_style
from paramreuse.tasks import CLASSIFICATION, SEGMENTATION


def _logits(n=40, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=g) * 2, torch.randint(0, classes, (n,), generator=g)


def test_classification_scores_match_numpy_references():
    logits, labels = _logits()
    kept = held_out_outputs(CLASSIFICATION, logits, labels)
    p = torch.softmax(logits.double(), 1).numpy()
    y = labels.numpy()
    onehot = np.eye(p.shape[1])[y]
    assert np.array_equal(image_scores(kept, "correct"), (p.argmax(1) == y).astype(float))
    assert np.allclose(image_scores(kept, "true-prob"), p[np.arange(len(y)), y], atol=1e-4)
    assert np.allclose(image_scores(kept, "brier"), 1 - ((p - onehot) ** 2).sum(1) / 2, atol=1e-4)
    # the 0/1 replay is the task's own score, image by image
    assert np.array_equal(image_scores(kept, "correct"), CLASSIFICATION.scores(logits, labels).numpy())


def test_temperature_minimises_the_log_loss_and_the_scaled_log_loss_is_no_worse():
    logits, _ = _logits(2000, seed=1)
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=torch.Generator().manual_seed(2)).squeeze(1)
    log_probs = F.log_softmax(logits.double() * 4, 1)  # labels drawn from softmax(logits), claimed 4x as sure
    t = temperature(log_probs, labels)
    nll = lambda temp: float(F.cross_entropy(log_probs / temp, labels))  # noqa: E731
    assert 3.0 < t < 5.0  # an overconfident model is cooled back to about its true confidence
    assert nll(t) <= min(nll(t * 1.2), nll(t / 1.2), nll(1.0)) + 1e-9
    kept = {"log_probs": log_probs.tolist(), "labels": labels.tolist()}
    assert image_scores(kept, "log-loss-ts").mean() == pytest.approx(-nll(t), abs=1e-9)


def test_segmentation_soft_scores_equal_the_hard_ones_for_certain_outputs():
    g = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (6, 8, 8), generator=g)
    certain = F.one_hot(masks, 3).movedim(-1, 1).float() * 50  # logits so large the softmax is one-hot
    kept = held_out_outputs(SEGMENTATION, certain, masks)["scores"]
    assert np.allclose(kept["soft-dice"], kept["correct"], atol=1e-5)
    assert np.allclose(kept["true-prob"], 1.0, atol=1e-5) and np.allclose(kept["brier"], 1.0, atol=1e-5)
    unsure = torch.zeros(6, 3, 8, 8)  # uniform probabilities: a third on the true class everywhere
    flat = held_out_outputs(SEGMENTATION, unsure, masks)["scores"]
    assert np.allclose(flat["true-prob"], 1 / 3, atol=1e-5)
    assert np.allclose(flat["brier"], 1 - (2 / 3) / 2, atol=1e-5)  # (2/3)^2 + 2 (1/3)^2 = 2/3 per pixel


def _evidence(reuse_logits, fresh_logits, labels):
    fold = {"reuse": held_out_outputs(CLASSIFICATION, reuse_logits, labels),
            "fresh": held_out_outputs(CLASSIFICATION, fresh_logits, labels)}  # fmt: skip
    correct = lambda x: CLASSIFICATION.scores(x, labels).tolist()  # noqa: E731
    return NetworkEvidence(tuple(correct(reuse_logits)), tuple(correct(fresh_logits)), 0.0, {"folds": [fold]})


def test_a_continuous_score_sees_what_zero_one_cannot():
    """Both arms right on the same images, but fresh training barely so: 0/1 ties, Brier favours S."""
    labels = torch.arange(20) % 4
    sure = F.one_hot(labels, 4).float() * 6
    barely = F.one_hot(labels, 4).float() * 0.3
    evidence = _evidence(sure, barely, labels)
    zero_one = decide_network(evidence, scratch_on="mean", scratch_margin=0.05, score="correct")
    brier = decide_network(evidence, scratch_on="mean", scratch_margin=0.05, score="brier")
    assert zero_one.difference == 0.0 and zero_one.ci == (0.0, 0.0)
    assert brier.difference > 0.2 and brier.ci[0] > 0 and brier.score == "brier"
    assert "brier score" in brier.reason
    # and the other way round: the fresh network sure, S barely right, trains from scratch on Brier alone
    assert decide_network(_evidence(barely, sure, labels), scratch_on="mean", scratch_margin=0.05,
                          score="brier").choice.value == "scratch"  # fmt: skip


def test_evidence_keeps_its_outputs_through_json_and_replays_every_fold():
    labels = torch.arange(10) % 2
    a, b = _logits(10, 2, seed=3)[0], _logits(10, 2, seed=4)[0]
    evidence = _evidence(a, b, labels)
    again = NetworkEvidence.from_dict(evidence.to_dict())
    assert again == evidence
    reuse, fresh = paired_scores(again.outputs, "correct")
    assert reuse.tolist() == list(evidence.reuse) and fresh.tolist() == list(evidence.fresh)
    # evidence from before outputs were kept decides on 0/1 and refuses any other score by name
    old = NetworkEvidence(evidence.reuse, evidence.fresh)
    with pytest.raises(ValueError, match="only 'correct'"):
        old.scores("brier")
    assert math.isclose(decide_network(old, scratch_on="mean", scratch_margin=0.0).difference,
                        decide_network(evidence, scratch_on="mean", scratch_margin=0.0).difference)  # fmt: skip


def test_crossfitted_evidence_keeps_each_arms_outputs(trained_pair, fake_fmnist):
    """The real path: every held-out shot of every fold has both arms' log-probabilities, and their 0/1 replay is
    the evidence's own score."""
    from paramreuse.data import load_task
    from paramreuse.judge.crossfit import network_evidence
    from paramreuse.training.loop import TrainConfig

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0, val_per_class=0, test_per_class=4)
    evidence = network_evidence(arch="builtin:cnn?width=4", state=s.state_dict(), data=task,
                                training=TrainConfig(epochs=2, batch_size=8, lr=1e-2, min_steps=4), seed=0)  # fmt: skip
    folds = evidence.outputs["folds"]
    assert len(folds) == 2 and sum(len(f["reuse"]["labels"]) for f in folds) == len(task.train)
    reuse, fresh = paired_scores(evidence.outputs, "correct")
    assert reuse.tolist() == list(evidence.reuse) and fresh.tolist() == list(evidence.fresh)
    assert all(len(row) == task.num_outputs for f in folds for row in f["fresh"]["log_probs"])
    # each fold says which shots it held out: together, every shot once, with its own label
    index = [i for f in folds for i in f["index"]]
    assert sorted(index) == list(range(len(task.train)))
    assert [task.train.y[i].item() for f in folds for i in f["index"]] == [y for f in folds for y in f["reuse"]["labels"]]


def test_the_default_rule_reads_the_true_class_probability_in_standard_errors():
    """The default (chosen on 23 calibration pairs): true-class probability, scratch below -0.5 standard errors.
    0/1 scores tie here, so round 4's rule reuses S; the default sees fresh training surer of the right class."""
    labels = torch.arange(40) % 4
    base = F.one_hot(labels, 4).float()
    g = torch.Generator().manual_seed(0)
    fresh = base * (2 + torch.rand(40, 1, generator=g))  # right, and sure of it
    reuse = base * (1 + torch.rand(40, 1, generator=g))  # right on the same images, less sure
    evidence = _evidence(reuse, fresh, labels)
    default = Thresholds()
    assert (default.scratch_on, default.scratch_margin, default.scratch_score) == ("se", 0.5, "true-prob")
    decision = network_decision(evidence, default, bounds=(-1.0, 1.0))
    zero_one = network_decision(evidence, Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct"),
                                bounds=(-1.0, 1.0))  # fmt: skip
    assert zero_one.choice.value == "reuse" and zero_one.difference == 0.0
    diffs = np.array(paired_scores(evidence.outputs, "true-prob")[0]) - paired_scores(evidence.outputs, "true-prob")[1]
    assert decision.se == pytest.approx(diffs.std(ddof=1) / math.sqrt(40))
    assert decision.difference < -0.5 * decision.se and decision.choice.value == "scratch"
    assert "true-prob score" in decision.reason and "standard errors" in decision.reason
    # a difference inside half a standard error is a tie, and ties reuse S
    noise = torch.randn(40, 1, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.1
    close = _evidence(fresh + base * noise, fresh, labels)
    tie = network_decision(close, default, bounds=(-1.0, 1.0))
    assert -0.5 * tie.se < tie.difference < 0 and tie.choice.value == "reuse"
    # the report names the score the difference is in
    plan = {"network": decision.to_dict(), "decision": "scratch", "layers": []}
    style = metric_style("accuracy")
    assert "true-class probability" in evidence_line(plan, {}, style)
    assert "true-class probability" in decision_clause(plan, style) and "-0.5 standard errors" in decision_clause(plan, style)
    # evidence from before outputs were kept is read in 0/1, as it was measured, and says so
    old = network_decision(NetworkEvidence(evidence.reuse, evidence.fresh), default, bounds=(-1.0, 1.0))
    assert old.score == "correct" and old.choice.value == "reuse"


def test_reconstruction_evidence_is_read_in_its_own_psnr_and_says_so():
    fold = {"index": [0, 1, 2], "reuse": {"scores": {"correct": [30.0, 31.0, 29.0]}},
            "fresh": {"scores": {"correct": [29.0, 30.5, 28.0]}}}  # fmt: skip
    evidence = NetworkEvidence((30.0, 31.0, 29.0), (29.0, 30.5, 28.0), 0.0, {"folds": [fold]})
    decision = network_decision(evidence, Thresholds(), bounds=None)
    assert decision.score == "correct" and decision.difference == pytest.approx(2.5 / 3)
    assert decision.choice.value == "reuse" and "true-prob" not in decision.reason
