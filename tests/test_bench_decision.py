"""bench/decision.py's limits: the regret a perfect network decision would leave, against the chosen rule."""

from bench.decision import limits
from paramreuse.results import write_json


def _doc(runs: dict[str, list[float]], differences: list[float]) -> dict:
    strategies = {name: {"by_shots": {"5": {"runs": values}}} for name, values in runs.items()}
    strategies["plan"]["by_shots"]["5"]["network_evidence"] = [{"difference": d, "ci": [d - 0.1, d + 0.1]} for d in differences]
    return {"seeds": len(differences), "strategies": strategies}


def test_limits_replays_the_rule_and_both_perfect_decisions(tmp_path, capsys):
    runs = {"scratch": [0.5, 0.6, 0.7], "plan": [0.6, 0.5, 0.7], "finetune-all": [0.65] * 3, "lp-ft": [0.6] * 3,
            "l2-sp": [0.6] * 3, "auto-rgn": [0.4] * 3}  # fmt: skip
    write_json(tmp_path / "W1" / "transfer" / "transfer.json", _doc(runs, [-0.2, 0.1, 0.0]))
    limits(tmp_path, (5,), 4)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and "| 5 |" in line}  # fmt: skip
    # best: finetune-all 0.65; the rule (mean below -0.05) sends draw 1 to scratch: 0.5, 0.5, 0.7
    assert rows["the chosen rule (mean, margin 0.05)"][3] == "+8.33"
    assert rows["perfect per pair (the better mean of scratch and the reuse plan)"][3] == "+5.00"  # both 0.6
    assert rows["perfect per draw"][3] == "+1.67"  # 0.6, 0.6, 0.7
    assert rows["perfect per draw"][4] == "0" and rows["the chosen rule (mean, margin 0.05)"][4] == "1"
