"""Sweep engine benchmark: naive vs cached vs cached+adaptive, side by side in one run.

For each architecture a source S is trained on Fashion-MNIST classes 0-4 and T is S
fine-tuned on 10 shots per class of classes 5-9 (the study's pair, shortened); the three
engines then sweep the same rows on the same target validation images, in turn, and the
table reports seconds, ratios to naive, and whether every verdict (drop <= tolerance) agrees.

    .venv/bin/python bench/sweep.py [--val 2500] [--resnet-val 1000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from paramreuse.data import load_task
from paramreuse.judge.replacement import PARAM_GROUPS, SweepConfig, replacement_sweep
from paramreuse.study import StudyTraining
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, run_training

ENGINES = {"naive": {"cached": False, "adaptive": False}, "cached": {"cached": True, "adaptive": False},
           "cached+adaptive": {"cached": True, "adaptive": True}}  # fmt: skip


def pair(arch: str, root: Path):
    source = load_task("fashion-mnist", "0-4", limit_per_class=1000, seed=0)
    target = load_task("fashion-mnist", "5-9", shots=10, seed=0)
    s, _ = run_training(RunSpec(arch, TrainConfig(epochs=2, lr=2e-3)), source, root / "S")
    init = str(root / "S" / "model.safetensors")
    t, _ = run_training(RunSpec(arch, StudyTraining().fewshot, init=init), target, root / "T", upstream=arch)
    return s.eval(), t.eval(), target


def bench(arch: str, params: tuple[str, ...], val_size: int, repeats: int, root: Path) -> list[list]:
    s, t, target = pair(arch, root / arch.replace(":", "_"))
    val = target.val.subset(torch.arange(min(val_size, len(target.val))))
    results = {}
    for _ in range(repeats):  # engines interleaved so that machine noise hits all of them alike
        for name, flags in ENGINES.items():
            start = time.perf_counter()
            sweep = replacement_sweep(s, t, val, target.train, SweepConfig(params=params, **flags))
            seconds = time.perf_counter() - start
            best = min(seconds, results.get(name, (float("inf"), None))[0])
            results[name] = (best, sweep)
    naive_seconds, naive = results["naive"]
    rows = []
    for name, (seconds, sweep) in results.items():
        same_values = all(abs(a.value - b.value) <= 1e-6 for a, b in zip(naive.rows, sweep.rows))
        verdicts = sum((a.drop <= 0.02) == (b.drop <= 0.02) for a, b in zip(naive.rows, sweep.rows))
        evaluated = sum(r.n for r in sweep.rows) / (len(val) * len(sweep.rows))
        rows.append([arch, name, len(sweep.rows), len(val), f"{seconds:.1f}", f"{naive_seconds / seconds:.2f}x",
                     f"{evaluated:.2f}", f"{verdicts}/{len(sweep.rows)}", "yes" if same_values else "no (early stop)"])  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=2500, help="target validation images for the builtin CNN")
    parser.add_argument("--resnet-val", type=int, default=1000, help="target validation images for resnet18")
    parser.add_argument("--repeats", type=int, default=1, help="runs per engine; the fastest counts")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-sweep"))
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = bench("builtin:cnn", PARAM_GROUPS, args.val, args.repeats, args.out)
    rows += bench("torchvision:resnet18", PARAM_GROUPS, args.resnet_val, args.repeats, args.out)
    header = ["arch", "engine", "rows", "val images", "seconds", "speed-up vs naive", "share of samples evaluated",
              "verdicts equal to naive", "values identical"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, tolerance 0.02")


if __name__ == "__main__":
    main()
