"""bench/scores.py: candidate scores and designs of the network decision, replayed per draw from kept outputs."""

import math

import numpy as np
import pytest

from bench.scores import TODAY, Draw, draws, regret


def _fold(index, labels, reuse_p, fresh_p):
    """One fold's kept outputs: two classes, the true class given ``reuse_p`` / ``fresh_p``."""
    log = lambda p, y: [math.log(p), math.log(1 - p)] if y == 0 else [math.log(1 - p), math.log(p)]  # noqa: E731
    return {"index": index, "reuse": {"log_probs": [log(p, y) for p, y in zip(reuse_p, labels)], "labels": labels},
            "fresh": {"log_probs": [log(p, y) for p, y in zip(fresh_p, labels)], "labels": labels}}  # fmt: skip


def _doc(scratch, plan, folds2, folds3=None):
    seeds = len(scratch)
    by = {"scratch": {"by_shots": {"5": {"runs": scratch}}},
          "plan": {"by_shots": {"5": {"runs": plan, "network_outputs": [{"folds": folds2}] * seeds}}}}  # fmt: skip
    if folds3 is not None:
        by["plan"]["by_shots"]["5"]["diagnostics"] = [{"designs": {"folds3": {"outputs": {"folds": folds3}}}}] * seeds
    return {"seeds": seeds, "strategies": by}


def test_brier_decides_where_zero_one_ties_and_the_regret_follows():
    # both arms right on all four images; fresh training barely so (0.55), S sure (0.95)
    folds = [_fold([0, 1], [0, 1], [0.95, 0.95], [0.55, 0.55]), _fold([2, 3], [0, 1], [0.95, 0.95], [0.55, 0.55])]
    ds = draws(_doc([0.6, 0.6, 0.6], [0.7, 0.7, 0.7], folds), 5)
    assert ds[0].differences("correct", "folds2").tolist() == [0.0] * 4
    # two classes: Brier score 1 - (1 - p)^2, so 0.9975 against 0.7975 on every image
    assert ds[0].differences("brier", "folds2") == pytest.approx([0.2] * 4)
    assert not ds[0].says_scratch(("brier", "folds2", "mean", 0.05))
    assert regret(ds, ("brier", "folds2", "mean", 0.05)) == pytest.approx(0.0)
    # the other way round the Brier rule trains from scratch on every draw; 0/1 (today's rule) still reuses
    flipped = [_fold([0, 1], [0, 1], [0.55, 0.55], [0.95, 0.95]), _fold([2, 3], [0, 1], [0.55, 0.55], [0.95, 0.95])]
    ds = draws(_doc([0.6, 0.6, 0.6], [0.7, 0.7, 0.7], flipped), 5)
    assert all(d.says_scratch(("brier", "folds2", "mean", 0.05)) for d in ds)
    assert regret(ds, ("brier", "folds2", "mean", 0.05)) == pytest.approx(0.1)  # scratch 0.6 where reuse had 0.7
    assert regret(ds, TODAY) == pytest.approx(0.0)


def test_designs_pair_the_same_images_across_folds():
    """The 3-fold design holds the shots out in another order; pooled and slope pair them by index."""
    folds2 = [_fold([0, 2], [0, 0], [0.9, 0.9], [0.5, 0.5]), _fold([1, 3], [1, 1], [0.9, 0.6], [0.5, 0.5])]
    folds3 = [_fold([3], [1], [0.7], [0.5]), _fold([0, 1], [0, 1], [0.9, 0.9], [0.5, 0.5]), _fold([2], [0], [0.9], [0.5])]
    d = Draw(0.5, 0.6, {"folds2": {"folds": folds2}, "folds3": {"folds": folds3}}, "classification")
    d2, d3 = d.differences("true-prob", "folds2"), d.differences("true-prob", "folds3")
    assert d2.tolist() == pytest.approx([0.4, 0.4, 0.4, 0.1])  # images 0, 2, 1, 3
    assert d3.tolist() == pytest.approx([0.2, 0.4, 0.4, 0.4])  # images 3, 0, 1, 2
    pooled = d.differences("true-prob", "pooled")
    assert pooled.tolist() == pytest.approx([0.4, 0.4, 0.4, 0.15])  # image 3: (0.1 + 0.2) / 2
    slope = d.differences("true-prob", "slope")
    assert slope[3] == pytest.approx(3 * 0.2 - 2 * 0.1)
    assert np.all(slope[:3] == pytest.approx(0.4))


def test_a_score_the_task_does_not_keep_is_no_candidate_there():
    folds = [{"index": [0], "reuse": {"scores": {"correct": [1.0], "soft-dice": [0.8]}},
              "fresh": {"scores": {"correct": [1.0], "soft-dice": [0.7]}}}]  # fmt: skip
    d = Draw(0.5, 0.6, {"folds2": {"folds": folds}}, "segmentation")
    assert d.differences("log-loss-ts", "folds2") is None and d.decided(("log-loss-ts", "folds2", "mean", 0.0)) is None
    assert d.differences("soft-dice", "folds2").tolist() == pytest.approx([0.1])
    assert d.differences("soft-dice", "pooled") is None  # no 3-fold design kept


def test_kept_results_replay_when_the_run_folder_is_gone(tmp_path, monkeypatch):
    import shutil

    from bench import scores
    from paramreuse.results import write_json

    monkeypatch.setattr(scores, "KEPT", tmp_path / "kept")
    folds = [_fold([0, 1], [0, 1], [0.9, 0.6], [0.5, 0.5])]
    doc = _doc([0.5, 0.6, 0.7], [0.6, 0.6, 0.6], folds)
    write_json(tmp_path / "runs" / "C1" / "transfer" / "transfer.json", doc)
    assert scores.keep(tmp_path / "runs") == ["C1"]
    shutil.rmtree(tmp_path / "runs")
    assert scores.kept(tmp_path / "runs", "C1") == doc
    assert scores.kept(tmp_path / "runs", "C2") is None


def test_one_score_per_task_and_the_evaluation_beside_the_baselines(capsys):
    """log-loss-ts|soft-dice reads soft Dice on masks, log-loss on classes; the evaluation's total regret counts
    the best reuse baseline, and the limits put a hindsight decision at or under every rule."""
    from bench import scores

    seg = [{"index": [0, 1], "reuse": {"scores": {"correct": [1.0, 1.0], "soft-dice": [0.6, 0.6]}},
            "fresh": {"scores": {"correct": [1.0, 1.0], "soft-dice": [0.8, 0.8]}}}]  # fmt: skip
    d = Draw(0.7, 0.5, {"folds2": {"folds": seg}}, "segmentation")
    assert d.says_scratch((scores.BOTH, "folds2", "mean", 0.05)) and not d.says_scratch(TODAY)
    folds = [_fold([0, 1], [0, 1], [0.9, 0.9], [0.6, 0.6])]  # S surer: every rule reuses
    doc = _doc([0.60, 0.62, 0.64], [0.70, 0.71, 0.72], folds)
    for name, runs in (("finetune-all", [0.74, 0.75, 0.76]), ("lp-ft", [0.7] * 3), ("l2-sp", [0.7] * 3), ("auto-rgn", [0.7] * 3)):
        doc["strategies"][name] = {"by_shots": {"5": {"runs": runs}}}
    ds = draws(doc, 5)
    assert ds[0].baselines["finetune-all"] == 0.74
    scores.against_baselines({"K1": ds}, scores.CHOSEN)
    out = capsys.readouterr().out
    assert "| K1 | finetune-all 0.750 | +4.0 / +4.0 | -4.0 | -4.0 |" in out  # 0.75 best, the plan 0.71
    flipped = draws(_doc([0.8, 0.5, 0.8], [0.6, 0.7, 0.6], [_fold([0, 1], [0, 1], [0.9, 0.9], [0.6, 0.6])]), 5)
    scores.limits({("K1", 5): flipped})
    rows = {line.split(" | ")[0].strip("| "): line for line in capsys.readouterr().out.splitlines()}
    assert "-6.67 (1)" in rows["perfect per draw"]  # mean of the better per draw 0.767 against the better mean 0.7
    assert "+0.00 (1)" not in rows["perfect per draw"]
