"""The plan rule itself, on hand-made sweeps and comparisons (no training)."""

import pytest

from paramreuse.config import ConfigError
from paramreuse.judge.kernels import Comparison, LayerDistance
from paramreuse.judge.plan import Decision, frozen_depth, judge, plan_decisions
from paramreuse.judge.replacement import Row, Sweep, SweepConfig
from paramreuse.judge.verdicts import J2, Thresholds, j2_status

UNITS = ("c1", "c2", "c3", "fc")  # fc is the head


def row(kind, layer, drop, ci, depth=None, params="unit"):
    return Row(f"{kind}:{layer}:{depth}", kind, layer, params, 0.9 - drop, drop, ci, 100, False, True, depth)


def sweep(cumulative, units=None, network=0.5, tolerance=0.02):
    """A sweep whose cumulative rows drop as given ((drop, ci) per depth) and whose unit rows drop as given."""
    units = units or {}
    rows = [row("unit", name, d, ci) for name, (d, ci) in units.items()]
    rows += [row("cumulative", UNITS[k], d, ci, depth=k + 1, params=f"units 1..{k + 1}") for k, (d, ci) in enumerate(cumulative)]
    rows += [row("network", "all conv", network, (network - 0.01, network + 0.01), params="conv_kernels_bn_kept")]
    return Sweep("accuracy", 0.9, tuple(rows), SweepConfig(tolerance=tolerance), "cached", None, 0.0, 100)


def comparison(positions, lineage="finetuned"):
    layers = tuple(LayerDistance(n, "conv2d", (4, 4, 3, 3), 0.1, 0.1, 0.1, 0.2, p, 0.9, ()) for n, p in zip(UNITS, positions))
    return Comparison(lineage, lineage, "rule", {"method": "none"}, layers, aligned_source=None)


@pytest.mark.parametrize(
    "drop, ci, expected",
    [
        (0.0, (-0.01, 0.015), J2.REUSABLE),
        (0.01, (-0.01, 0.03), J2.UNDECIDED),  # the CI straddles 0.02
        (0.05, (0.03, 0.07), J2.NOT_REUSABLE),
        (0.02, (0.02, 0.02), J2.REUSABLE),  # at the tolerance counts as within
        (0.021, None, J2.NOT_REUSABLE),  # no CI: the point estimate decides
    ],
)
def test_j2_status_reads_the_whole_interval(drop, ci, expected):
    assert j2_status(drop, ci, 0.02) is expected


# (cumulative curve, null positions of c1..fc, lineage) -> (depth, decisions of c1..c3)
CASES = [
    # decisive prefix of 2, then a clear drop: c1, c2 frozen, c3 fine-tuned
    ([(0.0, (-0.01, 0.01)), (0.01, (0.0, 0.02)), (0.2, (0.15, 0.25))], (0.1, 0.1, 0.1, 1.0), "finetuned", 2,
     ("reuse-frozen", "reuse-frozen", "reuse-finetuned")),
    # an undecided depth ends the prefix even when a deeper one looks fine
    ([(0.0, (-0.01, 0.01)), (0.01, (-0.02, 0.04)), (0.0, (-0.01, 0.01))], (0.1, 0.1, 0.1, 1.0), "finetuned", 1,
     ("reuse-frozen", "reuse-finetuned", "reuse-finetuned")),
    # nothing decisively within: fine-tune everything (the evidence says so)
    ([(0.1, (0.05, 0.15)), (0.3, (0.2, 0.4)), (0.5, (0.4, 0.6))], (0.1, 0.1, 0.1, 1.0), "finetuned", 0,
     ("reuse-finetuned", "reuse-finetuned", "reuse-finetuned")),
    # a fine-tuned pair never re-initialises, whatever J3 says
    ([(0.1, (0.05, 0.15)), (0.3, (0.2, 0.4)), (0.5, (0.4, 0.6))], (1.2, 1.3, 1.1, 1.0), "finetuned", 0,
     ("reuse-finetuned", "reuse-finetuned", "reuse-finetuned")),
    # an independent pair re-initialises the units no closer to T than a random draw
    ([(0.1, (0.05, 0.15)), (0.3, (0.2, 0.4)), (0.5, (0.4, 0.6))], (0.6, 1.3, 0.99, 1.0), "independent", 0,
     ("reuse-finetuned", "reinit", "reuse-finetuned")),
    # a frozen prefix wins over J3 on an independent pair: freezing was measured to cost nothing
    ([(0.0, (0.0, 0.0)), (0.5, (0.4, 0.6)), (0.5, (0.4, 0.6))], (1.5, 1.3, 0.5, 1.0), "independent", 1,
     ("reuse-frozen", "reinit", "reuse-finetuned")),
]  # fmt: skip


@pytest.mark.parametrize("curve, positions, lineage, depth, decisions", CASES)
def test_plan_rule_table(curve, positions, lineage, depth, decisions):
    plan = judge(sweep(curve), comparison(positions, lineage), head="fc", thresholds=Thresholds())
    assert plan.reusable_depth == depth
    assert tuple(plan.decisions()[n] for n in UNITS[:3]) == decisions
    assert plan.decisions()["fc"] == "reinit"
    rates = {layer.name: layer.rate for layer in plan.layers}
    assert all(rates[n] == (0.0 if d == "reuse-frozen" else 1.0) for n, d in zip(UNITS, decisions))
    assert all(layer.reason for layer in plan.layers)


def test_j1_is_reported_and_never_vetoes_reuse():
    good = judge(sweep([(0.0, (0.0, 0.0))] * 3, network=0.01), comparison((0.1,) * 4), "fc")
    bad = judge(sweep([(0.0, (0.0, 0.0))] * 3, network=0.6), comparison((0.1,) * 4), "fc")
    assert good.network_reusable and not bad.network_reusable
    assert good.decisions() == bad.decisions()  # J1 changes the verdict, not the plan
    assert bad.network_drop == pytest.approx(0.6)


def test_unit_j2_undecided_is_reported_and_not_counted_reusable():
    units = {"c1": (0.0, (-0.01, 0.01)), "c2": (0.01, (-0.01, 0.05)), "c3": (0.3, (0.25, 0.35))}
    plan = judge(sweep([(0.5, (0.4, 0.6))] * 3, units=units), comparison((0.1,) * 4), "fc")
    by = {layer.name: layer for layer in plan.layers}
    assert [by[n].j2 for n in ("c1", "c2", "c3")] == ["reusable", "undecided", "not reusable"]
    assert [by[n].reusable_by_replacement for n in ("c1", "c2", "c3")] == [True, False, False]


def test_tolerance_comes_from_the_sweep_not_a_classification_default():
    # A PSNR sweep with a 0.5 dB tolerance: a 0.3 dB drop is within it, though above 0.02.
    psnr = sweep([(0.3, (0.2, 0.4))] * 3, tolerance=0.5)
    plan = judge(psnr, comparison((0.1,) * 4), "fc")
    assert plan.thresholds.layer_tolerance == 0.5 and plan.reusable_depth == 3
    explicit = judge(psnr, comparison((0.1,) * 4), "fc", Thresholds(layer_tolerance=0.25))
    assert explicit.reusable_depth == 0


def test_frozen_depth_reads_rows_in_depth_order():
    rows = [row("cumulative", UNITS[k], 0.0 if k < 2 else 0.3, None, depth=k + 1) for k in (2, 0, 1)]
    assert frozen_depth(rows, 0.02) == 2


def test_plan_round_trips_through_its_json():
    import json

    from paramreuse.judge.plan import Plan

    plan = judge(sweep(CASES[0][0]), comparison(CASES[0][1]), "fc")
    doc = json.loads(json.dumps(plan.to_dict()))  # as written to and read from plan.json
    assert Plan.from_dict(doc) == plan
    assert plan_decisions(doc) == plan.decisions()
    assert doc["thresholds"] == Thresholds(layer_tolerance=0.02, network_tolerance=0.02).to_dict()
    doc["layers"][0]["decision"] = "reuse-maybe"
    with pytest.raises(ValueError):
        plan_decisions(doc)
    assert {d.value for d in Decision} == {"reuse-frozen", "reuse-finetuned", "reinit"}


@pytest.mark.parametrize("bad", [{"layer_tolerance": -0.1}, {"network_tolerance": -1.0}, {"finetuned_rate": -0.5}])
def test_negative_thresholds_are_refused_when_built(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        Thresholds(**bad)
