"""transfer.json's numbers (summarise) against scipy, on runs written by hand."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from paramreuse.transfer.config import TransferConfig
from paramreuse.transfer.summary import summarise

STRATEGIES = ("scratch", "finetune-all", "plan", "best-depth")
VALUES = {  # strategy -> shots -> one value per seed
    "scratch": {5: [0.41, 0.38, 0.45, 0.40], 10: [0.52, 0.49, 0.55, 0.50]},
    "finetune-all": {5: [0.61, 0.66, 0.58, 0.63], 10: [0.71, 0.69, 0.74, 0.70]},
    "plan": {5: [0.64, 0.65, 0.62, 0.69], 10: [0.99, 0.97, 1.0, 0.96]},  # near the bound: its t-interval passes 1
    "best-depth": {5: [0.66, 0.60, 0.64, 0.65], 10: [0.75, 0.78, 0.73, 0.77]},
}


def _runs(seeds: int) -> dict:
    runs = {}
    for name, by_shots in VALUES.items():
        for shots, values in by_shots.items():
            for seed in range(seeds):
                run = {"strategy": name, "shots": shots, "seed": seed, "value": values[seed], "seconds": 10.0 + seed}
                if name in ("plan", "best-depth"):
                    run["depth"] = (seed + shots) % 4
                runs[f"{name}/{shots}/{seed}"] = run
    return runs


def _t_interval(values: list[float]) -> list[float]:
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    return [max(low, 0.0), min(high, 1.0)]


def test_summarise_means_intervals_and_paired_tests_match_scipy():
    config = TransferConfig(strategies=STRATEGIES, shots=(5, 10), seeds=4)
    doc = summarise(_runs(4), config, headline=10, bounds=(0.0, 1.0))
    for name, by_shots in VALUES.items():
        entry = doc["strategies"][name]
        for shots, values in by_shots.items():
            got = entry["by_shots"][str(shots)]
            assert got["runs"] == values and got["mean"] == pytest.approx(np.mean(values))
            assert got["ci"] == pytest.approx(_t_interval(values)), (name, shots)
            assert got["seconds"] == [10.0, 11.0, 12.0, 13.0]
        assert entry["mean"] == pytest.approx(np.mean(by_shots[10]))  # the top level describes the headline shots
        assert entry["oracle"] == (name == "best-depth")
    assert doc["strategies"]["plan"]["ci"][1] == 1.0  # clipped to the metric's bound
    assert doc["strategies"]["plan"]["by_shots"]["5"]["depths"] == [1, 2, 3, 0]
    assert "depths" not in doc["strategies"]["scratch"]
    assert set(doc["significance"]) == {"plan_vs_scratch", "plan_vs_finetune-all"}  # compared baselines only
    for other in ("scratch", "finetune-all"):
        test = doc["significance"][f"plan_vs_{other}"]
        for shots in (5, 10):
            reference = stats.ttest_rel(VALUES["plan"][shots], VALUES[other][shots])
            got = test["by_shots"][str(shots)]
            assert got["p"] == pytest.approx(reference.pvalue)
            assert got["mean_diff"] == pytest.approx(np.mean(np.subtract(VALUES["plan"][shots], VALUES[other][shots])))
        assert test["p"] == test["by_shots"]["10"]["p"]


def test_summarise_gives_no_interval_or_p_below_three_seeds():
    config = TransferConfig(strategies=STRATEGIES, shots=(5, 10), seeds=2)
    doc = summarise(_runs(2), config, headline=5, bounds=(0.0, 1.0))
    scratch = doc["strategies"]["scratch"]
    assert scratch["mean"] == pytest.approx(np.mean(VALUES["scratch"][5][:2])) and scratch["ci"] is None
    assert doc["significance"]["plan_vs_scratch"]["p"] is None


def test_the_transfer_summary_counts_the_plans_network_decisions():
    """Each draw makes its own plan: the summary says how often it reused S and how often it trained from scratch."""
    from rich.console import Console

    from paramreuse.cli.transfer import print_transfer

    config = TransferConfig(strategies=STRATEGIES, shots=(5, 10), seeds=4)
    runs = _runs(4)
    for run in runs.values():
        if run["strategy"] == "plan":
            choice = "scratch" if (run["shots"], run["seed"]) in ((5, 0), (5, 3), (10, 1)) else "reuse"
            run["network"] = {"choice": choice, "difference": -0.1 if choice == "scratch" else 0.1}
    doc = summarise(runs, config, headline=10, bounds=(0.0, 1.0)) | {"shots": [5, 10], "metric": "accuracy", "seeds": 4}
    assert doc["strategies"]["plan"]["by_shots"]["5"]["network"] == ["scratch", "reuse", "reuse", "scratch"]
    console = Console(width=200, record=True)
    print_transfer(console, doc)
    text = console.export_text()
    assert "5 shots: reuse S on 2 of 4, scratch on 2; 10 shots: reuse S on 3 of 4, scratch on 1" in text
