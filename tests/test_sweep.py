import copy

import pytest

from paramreuse.judge.replacement import SweepConfig, replacement_sweep, row_specs, sweep_units
from paramreuse.training.loop import evaluate
from tests.conftest import synthetic_set

FAST = {"bootstrap": 200, "batch_size": 100}


def test_rows_cover_units_groups_depths_and_network(trained_pair):
    s, t = trained_pair
    units = sweep_units(s, t)
    assert [u.name for u in units][-1] == "fc.0"  # the head is never swept
    specs = row_specs(units, SweepConfig())
    assert sum(r.kind == "cumulative" for r in specs) == len(units) == 7
    assert {r.params for r in specs if r.layer == "features.0.0"} == {
        "conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit", "units 1..1"
    }  # fmt: skip
    network = [r for r in specs if r.kind == "network"]
    assert len(network) == 2 and all(k.endswith("weight") and "fc" not in k for k in network[0].keys)


def test_replacing_with_identical_values_changes_nothing(trained_pair):
    _, t = trained_pair
    val = synthetic_set(200, seed=2)
    sweep = replacement_sweep(copy.deepcopy(t), t, val, val, SweepConfig(adaptive=False, **FAST))
    assert sweep.baseline == pytest.approx(evaluate(t, val))
    for row in sweep.rows:
        if not row.recalibrated:
            assert row.drop == 0.0 and row.value == sweep.baseline and row.ci == (0.0, 0.0), row


def test_baseline_matches_torchmetrics_accuracy(trained_pair):
    s, t = trained_pair
    val = synthetic_set(150, seed=3)
    sweep = replacement_sweep(s, t, val, None, SweepConfig(params=("unit",), adaptive=False, **FAST))
    assert sweep.baseline == pytest.approx(evaluate(t, val), abs=1e-6)


def test_adaptive_verdicts_equal_full_verdicts(trained_pair):
    s, t = trained_pair
    val = synthetic_set(2000, seed=4)
    config = {"tolerance": 0.02, "bootstrap": 100, "batch_size": 100}
    full = replacement_sweep(s, t, val, val, SweepConfig(adaptive=False, **config))
    fast = replacement_sweep(s, t, val, val, SweepConfig(adaptive=True, **config))
    assert any(r.stopped_early for r in fast.rows)  # the fixture exercises early stopping
    assert {r.drop <= 0.02 for r in full.rows} == {True, False}  # and has both verdicts
    for a, b in zip(full.rows, fast.rows):
        assert (a.drop <= 0.02) == (b.drop <= 0.02), (a.id, a.drop, b.drop)


def _interrupted_after_five_rows(s, t, tmp_path):
    """A sweep of S into T killed after five rows: its evaluation set, config and rows log."""
    val = synthetic_set(200, seed=5)
    config = SweepConfig(adaptive=False, **FAST)
    log = tmp_path / "replacement.rows.jsonl"

    def stop_after_five(event):
        if event.completed == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replacement_sweep(s, t, val, val, config, progress=stop_after_five, log_path=log)
    return val, config, log


def test_interrupted_sweep_resumes_without_recomputing(trained_pair, tmp_path):
    s, t = trained_pair
    val, config, log = _interrupted_after_five_rows(s, t, tmp_path)
    assert len(log.read_text().splitlines()) == 1 + 5
    events = []
    resumed = replacement_sweep(s, t, val, val, config, progress=events.append, log_path=log)
    complete = replacement_sweep(s, t, val, val, config)
    assert resumed.resumed_rows == 5 and events[-1].total == len(complete.rows) - 5
    assert [r.to_dict() for r in resumed.rows] == [r.to_dict() for r in complete.rows]
    assert not log.exists()


def test_a_sweep_resumed_with_a_reordered_source_recomputes_every_row(trained_pair, tmp_path):
    """An interrupted --align none sweep resumed with --align weights sees another S: no row is reused.

    A channel-reordered kernel has the same sum and absolute sum, which the old digest hashed.
    """
    s, t = trained_pair
    val, config, log = _interrupted_after_five_rows(s, t, tmp_path)
    reordered = copy.deepcopy(s)
    first = reordered.features[0][0].weight
    first.data = first.data.flip(0)
    resumed = replacement_sweep(reordered, t, val, val, config, log_path=log)
    assert resumed.resumed_rows == 0


def test_a_curve_only_sweep_has_no_network_rows():
    from paramreuse.judge.replacement import SweepConfig, row_specs, sweep_units
    from paramreuse.models import build_model

    model = build_model("builtin:cnn?width=4", 1, 5)
    units = sweep_units(model, model)
    full = row_specs(units, SweepConfig(params=()))
    curve = row_specs(units, SweepConfig(params=(), network_rows=False))
    assert [r.kind for r in full].count("network") == 2 and all(r.kind == "cumulative" for r in curve)
    assert [r.id for r in curve] == [r.id for r in full if r.kind == "cumulative"]


def test_a_stream_read_row_by_row_equals_the_sweep_and_resumes_from_its_log(trained_pair, tmp_path):
    """SweepStream evaluates rows one at a time, in spec order; a stream killed after three rows picks them up."""
    from paramreuse.judge.replacement import SweepStream

    s, t = trained_pair
    val = synthetic_set(200, seed=5)
    config = SweepConfig(adaptive=False, keep_diffs=True, **FAST)
    complete = replacement_sweep(s, t, val, val, config)
    log = tmp_path / "replacement.rows.jsonl"
    killed = iter(SweepStream(s, t, val, val, config, log_path=log))
    first = [next(killed) for _ in range(3)]  # then the process dies: no sweep(), the log stays
    assert len(log.read_text().splitlines()) == 1 + 3
    resumed = SweepStream(s, t, val, val, config, log_path=log)
    rows = list(resumed)
    sweep = resumed.sweep()
    assert sweep.resumed_rows == 3 and [r.id for r in rows] == [r.id for r in complete.rows]
    assert [r.to_dict() for r in rows[:3]] == [r.to_dict() for r in first]
    for a, b in zip(rows, complete.rows):
        assert a.drop == pytest.approx(b.drop, abs=1e-9) and a.ci == pytest.approx(b.ci, abs=1e-9), a.id
    assert sweep.baseline == pytest.approx(complete.baseline) and not log.exists()


def test_a_sweep_read_in_the_true_class_probability_scores_how_sure_t_is(trained_pair):
    """score="true-prob": T's baseline is its mean probability of the true class, and each row's value is that of
    T with S's values in, against a by-hand softmax; the document names the score it is in."""
    import torch

    s, t = trained_pair
    val = synthetic_set(150, seed=3)
    config = SweepConfig(params=("unit",), adaptive=False, score="true-prob", **FAST)
    sweep = replacement_sweep(s, t, val, None, config)
    with torch.no_grad():
        by_hand = t.eval()(val.x).softmax(1).gather(1, val.y[:, None]).mean()
    assert sweep.baseline == pytest.approx(float(by_hand), abs=1e-6)
    assert sweep.baseline != pytest.approx(evaluate(t, val), abs=1e-3)  # not the accuracy
    assert sweep.metric == "true-class probability" and sweep.to_dict()["metric"] == "true-class probability"
    correct = replacement_sweep(s, t, val, None, SweepConfig(params=("unit",), adaptive=False, **FAST))
    assert [r.id for r in sweep.rows] == [r.id for r in correct.rows]
    assert any(a.drop != b.drop for a, b in zip(sweep.rows, correct.rows))


def test_a_sweep_score_the_task_cannot_read_is_refused_or_falls_back_to_the_metric():
    from paramreuse.config import ConfigError
    from paramreuse.judge.evidence import sweep_score
    from paramreuse.tasks import CLASSIFICATION, RECONSTRUCTION, SEGMENTATION

    with pytest.raises((ConfigError, ValueError), match="score"):
        SweepConfig(score="log-loss-ts")  # needs a temperature fitted per arm: not a sweep score
    assert sweep_score(CLASSIFICATION, "soft-dice") == "correct" and sweep_score(SEGMENTATION, "soft-dice") == "soft-dice"
    assert sweep_score(RECONSTRUCTION, "true-prob") == "correct" and SweepConfig(score="brier").metric(RECONSTRUCTION) == "psnr"
