"""Cross-fitting on the shots: folds, pooling, and the plan made from them."""

import pytest
import torch
from scipy import stats

from paramreuse.judge.crossfit import fold_indices, held_out, pooled
from paramreuse.judge.network import NetworkEvidence
from paramreuse.judge.replacement import Row, Sweep, SweepConfig
from tests.conftest import synthetic_set


def test_folds_are_disjoint_cover_everything_and_are_stratified():
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 6)
    folds = fold_indices(labels, 2, seed=3)
    assert sorted(torch.cat(folds).tolist()) == list(range(len(labels)))
    for fold in folds:
        counts = torch.bincount(labels[fold], minlength=3).tolist()
        assert counts == [5, 5, 3]
    assert [f.tolist() for f in fold_indices(labels, 2, seed=3)] == [f.tolist() for f in folds]  # seeded
    assert [f.tolist() for f in fold_indices(labels, 2, seed=4)] != [f.tolist() for f in folds]


def test_held_out_keeps_one_in_five_per_class():
    data = synthetic_set(50, seed=0, num_classes=5)
    fit, val = held_out(data, 0.2, seed=0)
    assert len(fit) + len(val) == 50
    assert set(fit.x.sum(dim=(1, 2, 3)).tolist()).isdisjoint(val.x.sum(dim=(1, 2, 3)).tolist())
    per_class = torch.bincount(val.y, minlength=5)
    expected = torch.bincount(data.y, minlength=5).div(5).round()
    assert (per_class - expected).abs().max() <= 1


def _fold_sweep(diffs_by_row, baseline):
    rows = tuple(Row(f"r{i}", "cumulative", f"u{i}", "units", baseline - sum(d) / len(d), sum(d) / len(d), (0.0, 0.0),
                     len(d), False, True, i + 1, tuple(d)) for i, d in enumerate(diffs_by_row))  # fmt: skip
    return Sweep("accuracy", baseline, rows, SweepConfig(bootstrap=2000), "cached", None, 1.0, len(diffs_by_row[0]))


def test_pooled_folds_weigh_every_sample_once():
    a = _fold_sweep([[0.0, 1.0, 0.0], [1.0, 1.0, 0.0]], baseline=0.8)
    b = _fold_sweep([[0.0, 0.0, 0.0, 0.0, 1.0], [-1.0, 0.0, 0.0, 0.0, 0.0]], baseline=0.6)
    merged = pooled([a, b], 2.0, bounds=(-1.0, 1.0))
    assert merged.samples == 8 and merged.baseline == pytest.approx((0.8 * 3 + 0.6 * 5) / 8)
    first = merged.rows[0]
    assert first.n == 8 and first.drop == pytest.approx(2 / 8)
    assert first.value == pytest.approx(((0.8 - 1 / 3) * 3 + (0.6 - 1 / 5) * 5) / 8)
    reference = stats.bootstrap(([0, 1, 0, 0, 0, 0, 0, 1],), lambda x, axis: x.mean(axis=axis), n_resamples=2000,
                                method="percentile", random_state=0).confidence_interval  # fmt: skip
    assert first.ci[0] == pytest.approx(reference.low, abs=0.07) and first.ci[1] == pytest.approx(reference.high, abs=0.07)
    assert merged.rows[1].drop == pytest.approx(1 / 8)
    assert merged.extra["folds"] == [{"baseline": 0.8, "samples": 3}, {"baseline": 0.6, "samples": 5}]


def _fake_crossfit(curve, reuse, fresh):
    """A stand-in for crossfit_sweep: the given cumulative curve and network evidence (rows skipped when rows_if says so)."""

    def fake_sweep(**kwargs):
        evidence = NetworkEvidence(tuple(reuse), tuple(fresh))
        rows = tuple(Row(f"d{k}", "cumulative", f"u{k}", "u", 0.5, d, ci, 20, False, True, k + 1) for k, (d, ci) in enumerate(curve))
        if kwargs["rows_if"] is not None and not kwargs["rows_if"](evidence):
            rows = ()
        return Sweep("accuracy", 0.5, rows, kwargs["config"], "cached", None, 3.5, 20, extra={"network_evidence": evidence.to_dict()})

    return fake_sweep


def test_plan_from_shots_freezes_the_decisive_prefix(trained_pair, fake_fmnist, monkeypatch):
    """The plan made inside a transfer run uses the cross-fitted curve and the CI rule, once the network decision reuses S."""
    from paramreuse.data import load_task
    from paramreuse.training.loop import TrainConfig
    from paramreuse.transfer import runs
    from paramreuse.transfer.strategies import unit_names

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0, val_per_class=0)
    curve = [(0.0, (-0.01, 0.01)), (0.0, (-0.02, 0.02)), (0.0, (-0.05, 0.05)), (0.3, (0.2, 0.4))]
    monkeypatch.setattr(runs, "crossfit_sweep", _fake_crossfit(curve, [1, 1, 0, 1], [1, 0, 0, 1]))
    config = runs.TransferConfig(training=TrainConfig(min_steps=4))
    decisions, evidence = runs.plan_from_shots(runs.Source("builtin:cnn?width=4", s.state_dict()), task, 0, config, "cpu")
    names = unit_names(s)
    assert evidence["depth"] == 2 and evidence["plan_seconds"] == 3.5 and evidence["tolerance"] == 0.02
    assert evidence["network"]["choice"] == "reuse" and evidence["network"]["difference"] == 0.25
    assert [decisions[n] for n in names] == ["reuse-frozen"] * 2 + ["reuse-finetuned"] * (len(names) - 2)


def test_plan_from_shots_trains_from_scratch_when_fresh_training_scores_higher(trained_pair, fake_fmnist, monkeypatch):
    """Held-out shots that favour the fresh network make a no-go plan: every unit re-initialised, no prefix swept."""
    from paramreuse.data import load_task
    from paramreuse.judge.verdicts import Thresholds
    from paramreuse.training.loop import TrainConfig
    from paramreuse.transfer import runs

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0, val_per_class=0)
    decisive = [(0.0, (-0.01, 0.01))] * 4  # a curve that would freeze everything, were S reused
    monkeypatch.setattr(runs, "crossfit_sweep", _fake_crossfit(decisive, [0, 0, 1, 0], [1, 1, 1, 0]))
    source = runs.Source("builtin:cnn?width=4", s.state_dict())
    on = runs.TransferConfig(training=TrainConfig(min_steps=4), thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct"))
    decisions, evidence = runs.plan_from_shots(source, task, 0, on, "cpu")
    assert set(decisions.values()) == {"reinit"} and evidence["depth"] == 0 and evidence["curve"] == []
    assert evidence["network"]["choice"] == "scratch" and evidence["network"]["difference"] == -0.5
    # with the decision off ("never", the default) no evidence is measured: S is reused, the decisive curve's 4 units frozen
    never = runs.TransferConfig(training=TrainConfig(min_steps=4), thresholds=Thresholds(scratch_on="never"))
    decisions, evidence = runs.plan_from_shots(source, task, 0, never, "cpu")
    assert evidence["network"] is None and evidence["depth"] == 4
    assert list(decisions.values())[:4] == ["reuse-frozen"] * 4 and "reinit" not in decisions.values()


def test_a_curve_stopped_where_the_prefix_ends_is_the_full_curve_up_to_there(trained_pair, fake_fmnist, monkeypatch):
    """The plan's sweep stops at the first depth not decisively within the tolerance: the rows up to
    it are the full curve's, the rows past it are never evaluated, and the frozen depth is unchanged."""
    from paramreuse.data import load_task
    from paramreuse.judge import replacement_engine as sweep_engine
    from paramreuse.judge.crossfit import crossfit_sweep
    from paramreuse.judge.plan import extends_prefix, frozen_depth
    from paramreuse.training.loop import TrainConfig

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=6, seed=0, val_per_class=0)
    args = {"arch": "builtin:cnn?width=4", "state": s.state_dict(), "data": task, "training": TrainConfig(min_steps=4),
                "config": SweepConfig(params=(), network_rows=False, bootstrap=200)}  # fmt: skip
    full = crossfit_sweep(**args).by_kind("cumulative")
    assert len(full) > 3
    evaluated = []
    evaluate_all = sweep_engine.Evaluator.evaluate_all

    def counted(self, variants, rule=None):
        evaluated.extend(variants)
        return evaluate_all(self, variants, rule)

    monkeypatch.setattr(sweep_engine.Evaluator, "evaluate_all", counted)
    for ends_at in (1, 3):  # a stop rule that ends the curve at a known depth
        evaluated.clear()
        stopped = crossfit_sweep(**args, stop=lambda row, ends_at=ends_at: row.depth == ends_at)
        assert [r.depth for r in stopped.rows] == list(range(1, ends_at + 1)) and stopped.extra["stopped_at"] == ends_at
        assert len(evaluated) == 2 * ends_at  # each fold's rows up to the stop, nothing past it
        for a, b in zip(stopped.rows, full):
            assert (a.drop, *a.ci, a.n) == pytest.approx((b.drop, *b.ci, b.n), abs=1e-9)
    # Tolerances from the curve itself (any draw of the shots): below every drop and just above each row's CI,
    # so that none, part and all of it freeze.
    candidates = sorted({-0.01, 0.0, *(row.ci[1] + 1e-6 for row in full), max(row.ci[1] for row in full) + 0.1})
    by_depth = {frozen_depth(full, t): t for t in candidates}
    assert {0, len(full)} <= set(by_depth) and len(by_depth) >= 3, by_depth  # none, part and all of the curve frozen
    tolerances = tuple(by_depth.values())
    for tolerance in tolerances:  # the plan rule's own stop keeps the depth the full curve gives
        rule = lambda row, tolerance=tolerance: not extends_prefix(row, tolerance)  # noqa: E731
        stopped = crossfit_sweep(**args, stop=rule).by_kind("cumulative")
        assert frozen_depth(stopped, tolerance) == frozen_depth(full, tolerance)
        assert len(stopped) == min(frozen_depth(full, tolerance) + 1, len(full))


def test_a_scratch_plan_trains_exactly_as_the_scratch_strategy(trained_pair, fake_fmnist, monkeypatch):
    """A no-go plan is training from scratch: the same initialisation, steps and test metric, to the last digit."""
    from paramreuse.data import load_task
    from paramreuse.judge.verdicts import Thresholds
    from paramreuse.training.loop import TrainConfig
    from paramreuse.transfer import runs

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0, val_per_class=0, test_per_class=10)
    monkeypatch.setattr(runs, "crossfit_sweep", _fake_crossfit([(0.0, (-0.01, 0.01))], [0, 0, 0, 0], [1, 1, 1, 1]))
    source = runs.Source("builtin:cnn?width=4", s.state_dict())
    config = runs.TransferConfig(training=TrainConfig(epochs=3, batch_size=8, lr=1e-2, min_steps=6),
                                 thresholds=Thresholds(scratch_on="mean", scratch_margin=0.05, scratch_score="correct"))
    planned = runs._plan_run(source, task, None, 3, config, "cpu")
    scratch = runs.run_one(source, task, "scratch", plan=None, seed=3, config=config, device="cpu")
    assert planned["network"]["choice"] == "scratch" and planned["copied"] == 0
    assert planned["value"] == scratch["value"]
    # and a plan that reuses S differs from scratch (S's tensors were copied in)
    monkeypatch.setattr(runs, "crossfit_sweep", _fake_crossfit([(0.5, (0.4, 0.6))], [1, 1, 1, 1], [0, 0, 0, 0]))
    reused = runs._plan_run(source, task, None, 3, config, "cpu")
    assert reused["network"]["choice"] == "reuse" and reused["copied"] > 0


def test_the_frozen_prefix_curve_is_read_in_the_thresholds_sweep_score(trained_pair, fake_fmnist, monkeypatch):
    """Thresholds.sweep_score reaches the cross-fitted curve the plan freezes from (default: the task's metric)."""
    from paramreuse.data import load_task
    from paramreuse.judge.verdicts import Thresholds
    from paramreuse.training.loop import TrainConfig
    from paramreuse.transfer import runs

    s, _ = trained_pair
    task = load_task("fashion-mnist", "5-9", shots=4, seed=0, val_per_class=0)
    seen = []
    fake = _fake_crossfit([(0.0, (-0.01, 0.01))], [1, 1], [1, 1])
    monkeypatch.setattr(runs, "crossfit_sweep", lambda **kw: seen.append(kw["config"].score) or fake(**kw))
    source = runs.Source("builtin:cnn?width=4", s.state_dict())
    for score in ("true-prob", "correct"):
        config = runs.TransferConfig(training=TrainConfig(min_steps=4), thresholds=Thresholds(sweep_score=score))
        runs.plan_from_shots(source, task, 0, config, "cpu")
    assert seen == ["true-prob", "correct"] and Thresholds().sweep_score == "correct"
