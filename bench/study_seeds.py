"""The default study over several seeds: each model's test accuracy and the T - T_scratch gain.

    for s in 0 1 2 3 4; do .venv/bin/paramreuse study --seed $s --out runs/seeds/seed$s --quiet; done
    .venv/bin/python bench/study_seeds.py runs/seeds/seed*

A seed changes S's initialisation, the validation carve, the target shots and every training
order. Reports mean, standard deviation and a 95% t-interval over seeds, and a paired t-test.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from scipy import stats

from paramreuse.stats import t_interval


def main() -> None:
    runs = [json.loads((Path(p) / "results.json").read_text()) for p in sys.argv[1:]]
    if not runs:
        sys.exit("usage: study_seeds.py RUN_DIR...")
    names = list(runs[0]["models"])
    per_model = {n: [r["models"][n]["test_metric"] for r in runs] for n in names}
    print(f"{len(runs)} seeds: {[r['config']['seed'] for r in runs]}\n")
    print("| model | mean | sd | 95% t-interval | per seed |\n|---|---|---|---|---|")
    for n, values in per_model.items():
        lo, hi = t_interval(values)
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {n} | {statistics.mean(values):.4f} | {sd:.4f} | {lo:.4f} to {hi:.4f} | {', '.join(f'{v:.3f}' for v in values)} |")
    gains = [t - s for t, s in zip(per_model["target"], per_model["scratch"])]
    lo, hi = t_interval(gains)
    test = stats.ttest_rel(per_model["target"], per_model["scratch"]) if len(runs) > 1 else None
    p = f"{test.pvalue:.2g}" if test is not None else "n/a"
    print(f"\nT - T_scratch: mean {statistics.mean(gains):+.4f}, 95% t-interval {lo:+.4f} to {hi:+.4f}, "
          f"paired t-test p = {p}; per seed {', '.join(f'{g:+.3f}' for g in gains)}")  # fmt: skip
    seconds = [r["seconds"] for r in runs if not all(m["resumed"] for m in r["models"].values())]
    if seconds:
        print(f"study wall time per seed (fresh runs): {min(seconds):.0f}-{max(seconds):.0f} s")


if __name__ == "__main__":
    main()
