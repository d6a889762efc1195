"""Transfer benchmark: the plan against scratch, fine-tune-all, linear probe, best depth and L2-SP.

Source: builtin CNN on Fashion-MNIST classes 0-4 (the study's S). Targets: Fashion-MNIST 5-9
(near) and scikit-learn digits (far). Each target runs a full study (its own T, sweep and
plan) and then every strategy at 5, 10, 20 and 50 shots over 5 seeds on the same shots.

    OMP_NUM_THREADS=1 .venv/bin/python bench/transfer.py [--seeds 5] [--shots 5,10,20,50]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from paramreuse.study import DataConfig, StudyConfig, run_study
from paramreuse.transfer.config import TransferConfig

TARGETS = {"near: fashion-mnist 5-9": DataConfig("fashion-mnist", "5-9", shots=10),
           "far: digits 0-9": DataConfig("digits", "0-9", shots=10)}  # fmt: skip


def table(name: str, doc: dict) -> str:
    shots = doc["shots"]
    lines = [f"### {name}", "", "| strategy | " + " | ".join(f"{n} shots" for n in shots) + " |", "|---|" + "---|" * len(shots)]
    for strategy, entry in doc["strategies"].items():
        cells = [f"{b['mean']:.3f} [{b['ci'][0]:.3f}, {b['ci'][1]:.3f}]" for b in (entry["by_shots"][str(n)] for n in shots)]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    for key, sig in doc["significance"].items():
        cells = [f"{b['mean_diff']:+.3f} (p {'n/a' if b['p'] is None else format(b['p'], '.2g')})"
                 for b in (sig["by_shots"][str(n)] for n in shots)]  # fmt: skip
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    depths = [doc["strategies"]["best-depth"]["by_shots"][str(n)]["depths"] for n in shots]
    lines.append(f"\nbest-depth chose frozen depths {dict(zip(shots, depths))}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds on the near target")
    parser.add_argument("--far-seeds", type=int, default=3, help="seeds on the far target")
    parser.add_argument("--shots", default="5,10,20,50")
    parser.add_argument("--test-per-class", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-transfer"))
    args = parser.parse_args()
    shots = tuple(int(s) for s in args.shots.split(","))
    report = []
    for i, (name, target) in enumerate(TARGETS.items()):
        seeds = args.seeds if i == 0 else args.far_seeds
        config = StudyConfig(target=target, test_per_class=args.test_per_class,
                             transfer=TransferConfig(shots=shots, seeds=seeds))  # fmt: skip
        run = args.out / ("near" if i == 0 else "far")
        results = run_study(config, run)
        plan = json.loads((run / "plan.json").read_text())
        doc = json.loads((run / "transfer" / "transfer.json").read_text())
        decisions = [layer["decision"] for layer in plan["layers"]]
        reused = sum(d != "reinit" for d in decisions)
        report.append(table(name, doc))
        report.append(
            f"plan: {reused} of {len(decisions)} units reused ({', '.join(decisions)}); J1 drop "
            f"{plan['network_drop']:+.3f}, reusable depth {plan['reusable_depth']}; study took {results['seconds']:.0f} s"
        )
    print("\n\n".join(report))


if __name__ == "__main__":
    main()
