"""bench/plan.py's tables: the best baseline per pair, and a cost-only run (plan and best-depth alone)."""

from bench.plan import markdown_table, pair_rows, verdicts


def _doc(means: dict[str, float]) -> dict:
    strategies = {}
    for name, mean in means.items():
        runs = [mean - 0.01, mean, mean + 0.01]
        entry = {"mean": mean, "ci": [mean - 0.02, mean + 0.02], "runs": runs, "depths": [0, 1, 2]}
        if name == "plan":
            entry["plan_seconds"] = [1.0, 2.0, 3.0]
        if name == "best-depth":
            entry["candidate_seconds"] = [10.0, 10.0, 4.0]
        strategies[name] = {"by_shots": {"5": entry}}
    return {"strategies": strategies}


def test_the_best_baseline_is_the_best_non_oracle_one_and_the_cost_pools_the_draws():
    doc = _doc({"finetune-all": 0.60, "lp-ft": 0.65, "l2-sp": 0.62, "best-depth": 0.70, "plan": 0.64})
    row = pair_rows("X", doc, 5)
    assert row["best_baseline"] == "lp-ft"  # best-depth is better but an oracle
    assert row["cost_ratio"] == (1 + 2 + 3) / (10 + 10 + 4)
    lines = verdicts([row])
    assert len(lines) == 4 and "-1.00 pts" in lines[0] and "does not hold" in lines[0]
    assert "X 0.25" in lines[-1]
    assert "vs lp-ft" in markdown_table([row], 5)


def test_a_cost_only_run_reports_the_cost_and_no_accuracy_verdict():
    row = pair_rows("N4", _doc({"best-depth": 0.70, "plan": 0.64}), 5)
    assert row["best_baseline"] is None
    assert verdicts([row]) == ["plan's cost / best-depth's candidates, per pair: N4 0.25; goal <= 0.33"]
    table = markdown_table([row], 5)
    assert "best baseline" not in table and "plan - best-depth" in table and "| N4 | 0.700 | 0.640 |" in table
