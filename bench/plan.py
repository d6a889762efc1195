"""The reuse plan against what a practitioner would do anyway, on pairs it was not tuned on.

For each source -> target pair: S is trained on the source (once, resumed from its folder),
then every strategy of the transfer grid trains on the same target shots per seed, at the
realistic labelled budget: each run sees only its shots. The plan is made afresh from those
shots (cross-fitted replacement curve, :mod:`paramreuse.judge.crossfit`); best-depth, the oracle,
chooses its frozen depth on a fifth of the shots held out, then retrains on all of them.

The pairs were split into calibration and evaluation pairs before the plan rule was tuned
(bench/README.md, "The plan rule"); the evaluation pairs are reported on their own.

    OMP_NUM_THREADS=1 .venv/bin/python bench/plan.py --pairs E1,E2 [--seeds 5] [--shots 5,10]
    .venv/bin/python bench/plan.py --report            # tables from every finished pair

Each pair runs in its own folder under --out and resumes from it, so pairs can run in
parallel processes (one per core) and an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from paramreuse.backends import RunContext
from paramreuse.config import from_mapping
from paramreuse.data import TaskData, load_task
from paramreuse.devices import resolve_device
from paramreuse.judge.verdicts import Thresholds
from paramreuse.results import read_json
from paramreuse.stats import paired_test, seed_interval
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, run_training
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import TRANSFER_FILE, run_transfer
from paramreuse.transfer.strategies import ORACLES, STRATEGIES

BASELINES = ("finetune-all", "lp-ft", "l2-sp", "auto-rgn")  # what a knowledgeable practitioner would pick among


@dataclass(frozen=True)
class Pair:
    """One source -> target benchmark pair."""

    arch: str
    source: str  # data name
    source_classes: str
    target: str
    target_classes: str
    split: str  # "calibration" or "evaluation", fixed before the rule was tuned
    size: int | None = None
    source_limit: int = 1000  # source images per class
    source_epochs: int = 3
    test_per_class: int = 300
    depth_candidates: int = 9  # best-depth's frozen depths tried (evenly spaced when the network has more)
    source_variant: str = ""  # how S's training data are spoiled on purpose: "noise", "shuffled-labels" (see spoil)

    @property
    def name(self) -> str:
        spoiled = f" ({self.source_variant})" if self.source_variant else ""
        return f"{self.arch} {self.source} {self.source_classes}{spoiled} -> {self.target} {self.target_classes}"


PAIRS = {
    "C1": Pair("builtin:cnn", "fashion-mnist", "5-9", "fashion-mnist", "0-4", "calibration"),
    "C2": Pair("builtin:cnn", "fashion-mnist", "0,2,4,6,8", "fashion-mnist", "1,3,5,7,9", "calibration"),
    "E1": Pair("builtin:cnn", "fashion-mnist", "0-4", "fashion-mnist", "5-9", "evaluation"),
    "E2": Pair("builtin:cnn", "fashion-mnist", "0-4", "digits", "0-9", "evaluation"),
    "E3": Pair("torchvision:resnet18", "fashion-mnist", "0-4", "fashion-mnist", "5-9", "evaluation",
               source_limit=600, source_epochs=2, test_per_class=200, depth_candidates=6),
    "E4": Pair("builtin:unet", "fashion-mnist-seg-multi", "0-4", "fashion-mnist-seg-multi", "5-9", "evaluation",
               size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "E5": Pair("smp:PSPNet/resnet18", "fashion-mnist-seg-multi", "0-4", "fashion-mnist-seg-multi", "5-9", "evaluation",
               size=32, source_limit=600, source_epochs=4, test_per_class=100),
    # Round 2 (fixed before it ran): the rule with the head warm-started (chosen on C1-C2 and E1-E5,
    # which all serve as calibration pairs for it), judged on pairs it never saw.
    "N1": Pair("builtin:cnn?width=32", "fashion-mnist", "0-4", "digits", "0-9", "evaluation (round 2)"),
    "N2": Pair("builtin:cnn", "fashion-mnist", "1,3,5,7,9", "fashion-mnist", "0,2,4,6,8", "evaluation (round 2)"),
    "N3": Pair("builtin:unet", "fashion-mnist-seg-multi", "5-9", "fashion-mnist-seg-multi", "0-4", "evaluation (round 2)",
               size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "N4": Pair("smp:PSPNet/resnet18", "fashion-mnist-seg-multi", "5-9", "fashion-mnist-seg-multi", "0-4",
               "evaluation (round 2)", size=32, source_limit=600, source_epochs=4, test_per_class=100),
    # Round 3 (issue 20, reuse or start fresh; fixed before the network rule was chosen): every pair
    # above is a calibration pair; these are new, four designed for S to hurt, four for it to help.
    "V1": Pair("builtin:cnn", "fashion-mnist", "0-4", "fashion-mnist", "5-9", "evaluation (round 3)",
               source_variant="noise"),
    "V2": Pair("builtin:cnn", "fashion-mnist", "5-9", "digits", "0-9", "evaluation (round 3)",
               source_variant="shuffled-labels"),
    "V3": Pair("builtin:cnn?width=32", "digits", "0-9", "fashion-mnist", "0-4", "evaluation (round 3)", source_epochs=6),
    "V4": Pair("builtin:unet", "fashion-mnist-seg-multi", "0-4", "fashion-mnist-seg-multi", "5-9", "evaluation (round 3)",
               size=32, source_limit=600, source_epochs=4, test_per_class=100, source_variant="noise"),
    "V5": Pair("torchvision:resnet18", "fashion-mnist", "5-9", "fashion-mnist", "0-4", "evaluation (round 3)",
               source_limit=600, source_epochs=2, test_per_class=200, depth_candidates=6),
    "V6": Pair("builtin:unet", "fashion-mnist-seg-multi", "0,2,4,6,8", "fashion-mnist-seg-multi", "1,3,5,7,9",
               "evaluation (round 3)", size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "V7": Pair("smp:PSPNet/resnet18", "fashion-mnist-seg-multi", "1,3,5,7,9", "fashion-mnist-seg-multi", "0,2,4,6,8",
               "evaluation (round 3)", size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "V8": Pair("builtin:cnn", "fashion-mnist", "2-6", "fashion-mnist", "0,1,7,8,9", "evaluation (round 3)"),
    # Round 4 (fixed before the rule was chosen on every pair above, V1-V8 included, as calibration):
    # new pairs, two spoiled sources, one source of another width, three natural ones.
    "W1": Pair("builtin:cnn", "fashion-mnist", "0-4", "fashion-mnist", "5-9", "evaluation (round 4)",
               source_variant="shuffled-labels"),
    "W2": Pair("builtin:cnn", "digits", "0-9", "digits", "0-9", "evaluation (round 4)", source_variant="noise",
               test_per_class=45),
    "W3": Pair("builtin:cnn", "fashion-mnist", "3-7", "fashion-mnist", "0,1,2,8,9", "evaluation (round 4)"),
    "W4": Pair("builtin:cnn?width=32", "fashion-mnist", "5-9", "fashion-mnist", "0-4", "evaluation (round 4)"),
    "W5": Pair("builtin:unet", "fashion-mnist-seg-multi", "2-6", "fashion-mnist-seg-multi", "0,1,7,8,9",
               "evaluation (round 4)", size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "W6": Pair("builtin:unet", "fashion-mnist-seg-multi", "5-9", "fashion-mnist-seg-multi", "0-4", "evaluation (round 4)",
               size=32, source_limit=600, source_epochs=4, test_per_class=100, source_variant="noise"),
    # Round 5 (issue 26; fixed in bench/README.md before any candidate score or design was chosen): every pair
    # above is a calibration pair. Three where S hurts, of kinds not used before (pixels scrambled by one fixed
    # permutation, so S's kernels see no spatial structure; masks shuffled among images), three where reuse
    # should help, two near-ties, X8 a crossover like N1 (a wide net, clothes to digits).
    "X1": Pair("builtin:cnn", "fashion-mnist", "0-4", "fashion-mnist", "5-9", "evaluation (round 5)",
               source_variant="scrambled"),
    "X2": Pair("torchvision:resnet18", "fashion-mnist", "5-9", "fashion-mnist", "0-4", "evaluation (round 5)",
               source_limit=600, source_epochs=2, test_per_class=200, depth_candidates=6, source_variant="scrambled"),
    "X3": Pair("builtin:unet", "fashion-mnist-seg-multi", "0-4", "fashion-mnist-seg-multi", "5-9",
               "evaluation (round 5)", size=32, source_limit=600, source_epochs=4, test_per_class=100,
               source_variant="shuffled-masks"),
    "X4": Pair("builtin:cnn", "fashion-mnist", "4-8", "fashion-mnist", "0,1,2,3,9", "evaluation (round 5)"),
    "X5": Pair("torchvision:resnet18", "fashion-mnist", "2-6", "fashion-mnist", "0,1,7,8,9", "evaluation (round 5)",
               source_limit=600, source_epochs=2, test_per_class=200, depth_candidates=6),
    "X6": Pair("builtin:unet", "fashion-mnist-seg-multi", "3-7", "fashion-mnist-seg-multi", "0,1,2,8,9",
               "evaluation (round 5)", size=32, source_limit=600, source_epochs=4, test_per_class=100),
    "X7": Pair("builtin:cnn", "digits", "0-4", "digits", "5-9", "evaluation (round 5)", test_per_class=45),
    "X8": Pair("builtin:cnn?width=32", "fashion-mnist", "5-9", "digits", "0-9", "evaluation (round 5)"),
}  # fmt: skip
SPOILS = ("noise", "shuffled-labels", "scrambled", "shuffled-masks")


def spoil(data: TaskData, variant: str) -> TaskData:
    """S's training data made unlike any target on purpose (train and test alike, seeded).

    ``noise``: every image replaced by uniform noise in [-1, 1], labels and masks kept (nothing to
    learn but the noise); ``shuffled-labels``: the labels permuted (the features of memorisation);
    ``scrambled``: the pixels of every image permuted by one fixed permutation (the classes stay
    learnable, but not by local spatial kernels); ``shuffled-masks``: the masks permuted among images.
    """
    g = torch.Generator().manual_seed(0)
    pixels = torch.randperm(data.train.x[0].numel(), generator=g)

    def images(s):
        if variant == "noise":
            return dataclasses.replace(s, x=torch.rand(s.x.shape, generator=g) * 2 - 1)
        if variant == "scrambled":
            return dataclasses.replace(s, x=s.x.flatten(1)[:, pixels].reshape(s.x.shape))
        if variant == "shuffled-masks":
            return dataclasses.replace(s, mask=s.mask[torch.randperm(len(s.mask), generator=g)])
        return dataclasses.replace(s, y=s.y[torch.randperm(len(s.y), generator=g)])

    if variant not in SPOILS:
        raise ValueError(f"unknown source variant {variant!r}; use one of {', '.join(SPOILS)}")
    return dataclasses.replace(data, train=images(data.train), test=images(data.test))


def source_state(key: str, pair: Pair, out: Path, device) -> dict:
    """The pair's S, trained in ``out/key/source`` (or loaded from there when finished): its tensors."""
    source_data = load_task(pair.source, pair.source_classes, limit_per_class=pair.source_limit, size=pair.size,
                            test_per_class=pair.test_per_class)  # fmt: skip
    if pair.source_variant:
        source_data = spoil(source_data, pair.source_variant)
    spec = RunSpec(pair.arch, TrainConfig(epochs=pair.source_epochs, batch_size=64, lr=2e-3), seed=0)
    model, record = run_training(spec, source_data, out / key / "source", device)
    print(f"{key}: S {record['metric']} {record['test_metric']:.3f} on its own test set", flush=True)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def run_pair(key: str, pair: Pair, out: Path, shots: tuple[int, ...], seeds: int, device, *,
             strategies: tuple[str, ...] = STRATEGIES, thresholds: Thresholds = Thresholds(),
             source_only: bool = False, diagnose: bool = True) -> dict | None:  # fmt: skip
    """Train S (or load it), then the transfer grid at the shots budget; returns transfer.json."""
    state = source_state(key, pair, out, device)
    if source_only:
        return None
    config = TransferConfig(strategies=strategies, shots=shots, seeds=seeds, test_per_class=pair.test_per_class,
                            thresholds=thresholds, depth_candidates=pair.depth_candidates, diagnose=diagnose)  # fmt: skip
    return run_transfer(Source(pair.arch, state), None, pair.target, pair.target_classes,
                        RunContext(out / key / "transfer", device=device), config=config, headline=max(shots),
                        size=pair.size)  # fmt: skip


def pair_rows(key: str, doc: dict, n: int) -> dict:
    """Means per strategy at ``n`` shots, the plan's paired differences, depths and costs."""
    by = {name: entry["by_shots"][str(n)] for name, entry in doc["strategies"].items()}
    best = max((b for b in BASELINES if b in by), key=lambda b: by[b]["mean"], default=None)  # None: a cost-only run
    cost = lambda name, field: sum(by[name].get(field, [0.0]))  # noqa: E731
    return {
        "key": key,
        "means": {name: b["mean"] for name, b in by.items()},
        "cis": {name: b["ci"] for name, b in by.items()},
        "best_baseline": best,
        "plan_minus": {other: paired_test(by["plan"]["runs"], by[other]["runs"]) for other in by if other != "plan"},
        "plan_depths": by["plan"].get("depths"),
        "oracle_depths": by["best-depth"].get("depths") if "best-depth" in by else None,
        "cost_ratio": (cost("plan", "plan_seconds") / max(cost("best-depth", "candidate_seconds"), 1e-9)
                       if "best-depth" in by else None),
    }


def markdown_table(rows: list[dict], n: int) -> str:
    names = [s for s in STRATEGIES if s != "plan" and s in rows[0]["means"]] + ["plan"]
    label = lambda s: f"{s} (oracle)" if s in ORACLES else s  # noqa: E731
    versus = [v for v in ("finetune-all", "best-depth") if v in names]
    versus = (["best baseline"] if rows[0]["best_baseline"] else []) + versus
    lines = ["| pair | " + " | ".join(label(s) for s in names) + "".join(f" | plan - {v}" for v in versus) + " |",
             "|---|" + "---|" * (len(names) + len(versus))]  # fmt: skip
    for r in rows:
        m, d = r["means"], r["plan_minus"]
        best = r["best_baseline"]
        cells = [f"{m[s]:.3f}" for s in names]
        gaps = [f"{_gap(d[best])} vs {best}" if v == "best baseline" else _gap(d[v]) for v in versus]
        lines.append(f"| {r['key']} | " + " | ".join(cells + gaps) + " |")
    return "\n".join(lines)


def _gap(test: dict) -> str:
    """A paired difference in points, with its p when there is one."""
    points = f"{test['mean_diff'] * 100:+.1f} pts"
    return points if test["p"] is None else f"{points} (p {test['p']:.2g})"


def verdicts(rows: list[dict]) -> list[str]:
    """The issue's acceptance, measured on these rows (mean over pairs of per-pair means); the cost alone
    when the run had no baselines."""
    cost = ("plan's cost / best-depth's candidates, per pair: "
            + ", ".join(f"{r['key']} {r['cost_ratio']:.2f}" for r in rows if r["cost_ratio"] is not None)
            + "; goal <= 0.33")  # fmt: skip
    if not all(r["best_baseline"] and "finetune-all" in r["means"] and "best-depth" in r["means"] for r in rows):
        return [cost]
    mean = lambda xs: statistics.fmean(xs)  # noqa: E731
    plan = mean([r["means"]["plan"] for r in rows])
    best = mean([r["means"][r["best_baseline"]] for r in rows])
    ft_gaps = [r["means"]["plan"] - r["means"]["finetune-all"] for r in rows]
    oracle = mean([r["means"]["best-depth"] for r in rows])
    per_pair = [r["means"]["plan"] - r["means"][r["best_baseline"]] for r in rows]
    spread = seed_interval(per_pair)  # over pairs: no interval below 3 of them
    interval = (f"95% t-interval over pairs [{spread['ci'][0] * 100:+.2f}, {spread['ci'][1] * 100:+.2f}]"
                if spread["ci"] else f"{len(per_pair)} pairs: too few for an interval")  # fmt: skip
    return [
        (f"plan mean over pairs {plan:.4f} vs mean of each pair's best non-oracle baseline {best:.4f}: "
         f"{(plan - best) * 100:+.2f} pts ({interval}); "
         f"goal >= -0.5 pts: {'holds' if plan - best >= -0.005 else 'does not hold'}"),
        (f"plan - finetune-all per pair: {', '.join(f'{g * 100:+.2f}' for g in ft_gaps)} pts; "
         f"goal: none below -2 pts: {'holds' if min(ft_gaps) >= -0.02 else 'does not hold'}"),
        (f"plan - best-depth (oracle), mean over pairs: {(plan - oracle) * 100:+.2f} pts; goal within 1 pt: "
         f"{'holds' if abs(plan - oracle) <= 0.01 or plan > oracle else 'does not hold'}"),
        cost,
    ]


def report(out: Path, shots: tuple[int, ...]) -> None:
    for split in ("evaluation (round 5)", "evaluation (round 4)", "evaluation (round 3)", "evaluation (round 2)", "evaluation", "calibration"):
        for n in shots:
            rows = []
            for key, pair in PAIRS.items():
                path = out / key / "transfer" / TRANSFER_FILE
                if pair.split != split or not path.is_file():
                    continue
                doc = read_json(path)
                if str(n) not in doc["strategies"]["plan"]["by_shots"]:
                    continue
                rows.append(pair_rows(key, doc, n))
            if not rows:
                continue
            seeds = doc["seeds"]
            print(f"\n### {split} pairs, {n} shots, {seeds} seeds (target test metric, mean over seeds)\n")
            print(markdown_table(rows, n))
            print()
            for line in verdicts(rows):
                print(f"- {line}")
            for r in rows:
                print(f"- {r['key']}: plan depths {r['plan_depths']}, best-depth (oracle) depths {r['oracle_depths']}")
    print("\nPairs:")
    for key, pair in PAIRS.items():
        print(f"- {key} ({pair.split}): {pair.name}" + (f", {pair.size}x{pair.size} px" if pair.size else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=",".join(k for k, p in PAIRS.items() if p.split == "evaluation"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shots", default="5,10")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-plan"))
    parser.add_argument("--report", action="store_true", help="only print the tables of finished pairs")
    parser.add_argument("--source-only", action="store_true", help="only train (or load) the sources S")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="a subset, for calibration runs")
    parser.add_argument("--no-diagnose", action="store_true",
                        help="skip J1, J3 and the costlier evidence designs (the plan's own evidence only)")
    parser.add_argument("--thresholds", default="", help="plan-rule settings as TOML, e.g. 'freeze_on = \"mean\"'")
    args = parser.parse_args()
    shots = tuple(int(s) for s in args.shots.split(","))
    thresholds = from_mapping(Thresholds, tomllib.loads(args.thresholds), "--thresholds")
    if not args.report:
        device = resolve_device("auto")
        for key in args.pairs.split(","):
            run_pair(key, PAIRS[key], args.out, shots, args.seeds, device, strategies=tuple(args.strategies.split(",")),
                     thresholds=thresholds, source_only=args.source_only, diagnose=not args.no_diagnose)  # fmt: skip
        if args.source_only:
            return
    report(args.out, shots)


if __name__ == "__main__":
    main()
