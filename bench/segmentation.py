"""Parameter reuse for segmentation with UNet and PSPNet (the companion paper's setting).

For each network: a study with S trained to segment Fashion-MNIST garments of classes 0-4 (each
silhouette labelled with its class, images resized to 32x32) and a target of classes 5-9 with
10 images per class. Prints, per network, the few-shot Dice of scratch, fine-tune-all and the
plan over seeds with 95% CIs and paired tests, and the replacement drops per parameter group
(mean and sd over units) with the companion paper's four findings.

Run:  OMP_NUM_THREADS=2 .venv/bin/python bench/segmentation.py [--seeds 5] [--out runs/bench-seg]
Each study resumes from its folder, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

from paramreuse.config import from_mapping
from paramreuse.devices import resolve_device
from paramreuse.judge.verdicts import holds_text
from paramreuse.results import read_json
from paramreuse.study import StudyConfig, run_study

NETWORKS = ("smp:Unet/resnet18", "smp:PSPNet/resnet18", "builtin:unet")
GROUPS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit")


def config_for(arch: str, seeds: int) -> StudyConfig:
    return from_mapping(StudyConfig, {
        "arch": arch,
        "source": {"data": "fashion-mnist-seg-multi", "classes": "0-4", "limit_per_class": 600, "size": 32},
        "target": {"data": "fashion-mnist-seg-multi", "classes": "5-9", "shots": 10, "size": 32},
        "full_limit_per_class": 600,
        "val_per_class": 100,
        "test_per_class": 200,
        "training": {"source": {"epochs": 4, "batch_size": 64, "lr": 2e-3}, "full": {"epochs": 2, "batch_size": 64}},
        "transfer": {"seeds": seeds, "strategies": ["scratch", "finetune-all", "plan"]},
    })  # fmt: skip


def markdown(header: list[str], rows: list[list]) -> str:
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def transfer_rows(arch: str, run: Path) -> list[list]:
    doc = read_json(run / "transfer" / "transfer.json")
    rows = []
    for name, entry in doc["strategies"].items():
        sig = doc["significance"].get(f"plan_vs_{name}")
        vs = "" if sig is None else f"plan {sig['mean_diff']:+.3f}, p {sig['p']:.3g}" if sig["p"] is not None else "n/a"
        rows.append([arch, name, entry["mean"], f"[{entry['ci'][0]:.3f}, {entry['ci'][1]:.3f}]", vs])
    return rows


def group_rows(arch: str, run: Path) -> tuple[list[list], list[list]]:
    sweep = read_json(run / "replacement.json")
    by_group: dict[str, list[float]] = {}
    for row in sweep["rows"]:
        by_group.setdefault(row["params"], []).append(row["drop"])
    cells = []
    for g in GROUPS:
        drops = by_group.get(g, [])
        cells.append(f"{statistics.fmean(drops):+.3f} ({statistics.pstdev(drops):.3f}, n={len(drops)})" if drops else "none")
    findings = [[arch, f["finding"], holds_text(f["holds"])] for f in sweep["findings"]]
    return [[arch, sweep["baseline"], *cells]], findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-seg"))
    parser.add_argument("--networks", default=",".join(NETWORKS))
    args = parser.parse_args()
    device = resolve_device("auto")
    transfer, groups, findings, models = [], [], [], []
    for arch in args.networks.split(","):
        run = args.out / arch.replace(":", "-").replace("/", "-")
        start = time.perf_counter()
        results = run_study(dataclasses.replace(config_for(arch, args.seeds)), run, device)
        print(f"{arch}: {time.perf_counter() - start:.0f} s (resumed stages included)", flush=True)
        m = results["models"]
        gain = results["gains"]["target_vs_scratch"]
        models.append([arch, m["source"]["test_metric"], m["target"]["test_metric"], m["scratch"]["test_metric"],
                       m["full"]["test_metric"], f"{gain['mean']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]"])  # fmt: skip
        transfer += transfer_rows(arch, run)
        g, f = group_rows(arch, run)
        groups += g
        findings += f
    print("\n## Models (test Dice; T - T_scratch with a paired bootstrap CI over test images)\n")
    print(markdown(["network", "S (classes 0-4)", "T", "T_scratch", "T_full", "T - T_scratch"], models))
    print(f"\n## Few-shot Dice, 10 shots per class, {args.seeds} seeds (95% t-interval; paired t-test)\n")
    print(markdown(["network", "strategy", "mean Dice", "95% CI", "plan vs this"], transfer))
    print("\n## Replacement of T's values by S's: drop of Dice per parameter group, mean (sd, units)\n")
    print(markdown(["network", "T baseline", *GROUPS], groups))
    print("\n## The companion paper's findings\n")
    print(markdown(["network", "finding", "holds"], findings))


if __name__ == "__main__":
    main()
