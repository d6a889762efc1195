"""Predictive quality of transferability scores and of ours (issue 7), with their costs.

A zoo of small CNNs is trained on Fashion-MNIST (class subsets, widths, epochs, seeds, one with
noisy labels). For each target (Fashion-MNIST 5-9 and scikit-learn digits, 10 shots per class)
the ground truth is measured by fine-tuning: every source on the shots (study recipe, several
seeds: target test accuracy), and per layer with units 1..k frozen (accuracy vs k). Every
predictor sees the same labelled target images (shots + validation). The tables report
weighted Kendall tau and Spearman of each predictor against the ground truth, with percentile
bootstrap CIs, and each predictor's cost relative to the ground truth's.

    OMP_NUM_THREADS=1 .venv/bin/python bench/predict.py [--seeds 3] [--layer-seeds 2] [--quick]

Every training run is cached in --out (default runs/bench-predict): a rerun only re-scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from paramreuse.backends import RunContext
from paramreuse.data import ImageSet, TaskData, load_task
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.models import load_checkpoint
from paramreuse.models.heads import head_module_name
from paramreuse.models.units import inventory
from paramreuse.rank.features import extract_features
from paramreuse.rank.ranking import labelled_pool, our_signal, score_features, score_source, source_for_target
from paramreuse.rank.scores import FEATURE_SCORES
from paramreuse.results import write_json
from paramreuse.study import StudyTraining
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import MODEL_FILE, RunSpec, run_training

FEWSHOT = StudyTraining().fewshot
SOURCE_BASELINES = ("logme", "leep", "nce", "hscore", "hscore_shrinkage", "knn_loo", "linear_probe")


@dataclass(frozen=True)
class Source:
    name: str
    width: int
    classes: str
    per_class: int
    epochs: int
    seed: int = 0
    noise: float = 0.0
    lr: float = 2e-3

    @property
    def arch(self) -> str:
        return f"builtin:cnn?width={self.width}"


ZOO = (
    Source("w8-c0-4", 8, "0-4", 1000, 2),
    Source("w16-c0-4", 16, "0-4", 1000, 2),
    Source("w32-c0-4", 32, "0-4", 500, 1),
    Source("w16-all", 16, "0-9", 500, 2),
    Source("w16-c5-9", 16, "5-9", 500, 2),
    Source("w16-c0-1", 16, "0,1", 1000, 1),
    Source("w16-c0-4-noisy", 16, "0-4", 1000, 2, noise=0.6),
    Source("w16-c0-4-short", 16, "0-4", 500, 1, seed=1, lr=5e-4),
    Source("w8-c3-7", 8, "3-7", 500, 3),
    Source("w32-all", 32, "0-9", 500, 2),
)
TARGETS = {"fmnist-5-9": ("fashion-mnist", "5-9", 300), "digits": ("digits", None, None)}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def with_noisy_labels(data: TaskData, fraction: float, seed: int) -> TaskData:
    """``fraction`` of the training labels replaced by a different class drawn uniformly."""
    g = torch.Generator().manual_seed(seed)
    y = data.train.y.clone()
    flip = torch.rand(len(y), generator=g) < fraction
    shift = torch.randint(1, data.num_classes, (len(y),), generator=g)
    y[flip] = (y[flip] + shift[flip]) % data.num_classes
    return dataclasses.replace(data, train=ImageSet(data.train.x, y, data.train.class_names))


def train_zoo(root: Path, zoo: tuple[Source, ...]) -> dict[str, dict]:
    """Train (or load) every source; returns name -> train.json record."""
    records = {}
    for s in zoo:
        data = load_task("fashion-mnist", s.classes, seed=s.seed, limit_per_class=s.per_class, test_per_class=300)
        if s.noise:
            data = with_noisy_labels(data, s.noise, s.seed)
        spec = RunSpec(s.arch, TrainConfig(epochs=s.epochs, batch_size=128, lr=s.lr), s.seed)
        _, records[s.name] = run_training(spec, data, root / "zoo" / s.name, upstream=f"noise={s.noise}")
        record = records[s.name]
        log(f"source {s.name}: test acc {record['test_metric']:.3f}, {record['training']['seconds']:.1f} s")
    return records


def load_targets(names: list[str]) -> dict[str, TaskData]:
    return {
        name: load_task(data, classes, shots=10, seed=0, val_per_class=50, test_per_class=test)
        for name, (data, classes, test) in TARGETS.items()
        if name in names
    }


def units_of(path: Path) -> list:
    model, _ = load_checkpoint(path)
    head = head_module_name(model)
    return [u for u in inventory(model) if u.name != head]


def frozen(units: list, k: int) -> tuple[tuple[str, float], ...]:
    """lr_scale that freezes units 1..k (their layers and norms)."""
    return tuple((name, 0.0) for u in units[:k] for name in (u.name, u.norm) if name)


def finetune(source: Path, arch: str, data: TaskData, out: Path, seed: int, units: list, k: int, upstream: str) -> dict:
    config = dataclasses.replace(FEWSHOT, lr_scale=frozen(units, k))
    spec = RunSpec(arch, config, seed, init=str(source))
    return run_training(spec, data, out / f"k{k}-seed{seed}", stage="gt", upstream=upstream)[1]


def ground_truth(zoo, records, targets, root: Path, seeds: int, layer_seeds: int) -> dict:
    """gt[target][source]: mean test accuracy after fine-tuning (k = 0) and with units 1..k frozen."""
    gt = {}
    for tname, data in targets.items():
        gt[tname] = {}
        for s in zoo:
            path, start = root / "zoo" / s.name / MODEL_FILE, time.perf_counter()
            units, up = units_of(path), records[s.name]["fingerprint"]
            out = root / "gt" / tname / s.name
            runs = {(k, seed): finetune(path, s.arch, data, out, seed, units, k, up)
                    for k in range(len(units) + 1) for seed in range(1, (seeds if k == 0 else layer_seeds) + 1)}  # fmt: skip
            acc = {k: float(np.mean([r["test_metric"] for (kk, _), r in runs.items() if kk == k])) for k, _ in runs}
            gt[tname][s.name] = {
                "accuracy": acc[0], "seeds": seeds, "layer_seeds": layer_seeds,
                "layers": {u.name: acc[k] for k, u in enumerate(units, start=1)},
                "seconds": sum(r["training"]["seconds"] for (k, _), r in runs.items() if k == 0),
                "layer_seconds": sum(r["training"]["seconds"] for (k, _), r in runs.items() if k > 0),
            }  # fmt: skip
            log(f"gt {tname} {s.name}: fine-tune {acc[0]:.3f}, frozen 1..k " +
                " ".join(f"{v:.3f}" for v in gt[tname][s.name]["layers"].values()) + f" ({time.perf_counter() - start:.0f} s)")  # fmt: skip
    return gt


def predict(zoo, records, targets, root: Path) -> dict:
    """pred[target][source]: every predictor's value and seconds, per source and per layer."""
    pred = {}
    for tname, data in targets.items():
        pool, pred[tname] = labelled_pool(data), {}
        labels = pool.y.numpy()
        for s in zoo:
            path = root / "zoo" / s.name / MODEL_FILE
            model, _ = load_checkpoint(path)
            start = time.perf_counter()
            feats = extract_features(model, pool.x)
            forward = time.perf_counter() - start
            source_scores = score_source(feats, labels)
            layer_scores = {name: score_features(feats.per_layer[name], labels) for name in feats.layers}
            ours = our_signal(path, data, RunContext(root / "ours" / tname / s.name), seed=0)
            kept = kept_bn_cumulative(path, data, ours)
            entry = {"values": {k: v.value for k, v in source_scores.items()},
                     "seconds": {k: forward + v.seconds for k, v in source_scores.items()}}  # fmt: skip
            entry["values"] |= {"ours: J1 value": ours.j1_value, "ours: reusable depth": float(ours.reusable_depth),
                                "ours: -RMSE position": -ours.rmse_position, "ours: T val accuracy": ours.baseline,
                                "source accuracy": records[s.name]["test_metric"],
                                "parameter count": float(sum(p.numel() for p in model.parameters()))}  # fmt: skip
            entry["seconds"] |= {k: ours.seconds for k in entry["values"] if k.startswith("ours")}
            entry["layers"] = _layer_predictors(feats.layers, layer_scores, ours, kept, forward)
            pred[tname][s.name] = entry
            log(f"predictors {tname} {s.name}: J1 {ours.j1_value:.3f}, logme {entry['values']['logme']:.3f} "
                f"(ours {ours.seconds:.1f} s, features {forward:.2f} s)")  # fmt: skip
    return pred


def kept_bn_cumulative(path: Path, data: TaskData, ours) -> tuple[dict[str, float], float]:
    """The variant of ours that keeps S's batch-norm statistics in the replaced units: values, seconds."""
    s, (t, _) = source_for_target(path, data), load_checkpoint(ours.target_model)
    start = time.perf_counter()
    sweep = replacement_sweep(s, t.eval(), data.val, data.train, SweepConfig(params=("unit",)))
    return {r.layer: r.value for r in sweep.by_kind("cumulative")}, time.perf_counter() - start


OURS_LAYER = "ours: S's units 1..k in T, BN re-estimated"
OURS_LAYER_KEPT = "ours: S's units 1..k in T, BN kept"


def _layer_predictors(layers, layer_scores, ours, kept, forward: float) -> dict:
    ours_by_name = {layer["name"]: layer for layer in ours.layers}
    rows = {}
    positions = []
    for k, name in enumerate(layers, start=1):
        mine = ours_by_name[name]
        positions.append(mine["rmse_position"])
        rows[name] = {"values": {n: v.value for n, v in layer_scores[name].items()} | {
            OURS_LAYER: mine["cumulative_value"], OURS_LAYER_KEPT: kept[0][name],
            "ours: -RMSE position 1..k": -float(np.mean(positions)), "shallower first (-k)": -float(k)}}  # fmt: skip
    # Costs for the whole per-layer ranking of one pair: every layer scored, or one T and one sweep.
    seconds = {n: forward + sum(layer_scores[name][n].seconds for name in layers) for n in FEATURE_SCORES}
    seconds |= {OURS_LAYER: ours.seconds, "ours: -RMSE position 1..k": ours.seconds,
                OURS_LAYER_KEPT: ours.finetune_seconds + kept[1]}  # fmt: skip
    return {"rows": rows, "seconds": seconds}


# ---- statistics -------------------------------------------------------------------------


def correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    if kind == "spearman":
        return float(stats.spearmanr(x, y).statistic)
    return float(stats.weightedtau(x, y).statistic)


def boot_ci(x: np.ndarray, y: np.ndarray, kind: str, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap over the ranked items (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    draws = [correlation(x[i], y[i], kind) for i in rng.integers(0, len(x), size=(n, len(x)))]
    draws = [d for d in draws if np.isfinite(d)]
    return (float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))) if draws else (np.nan, np.nan)


def mean_ci(values: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-pair correlations and a percentile bootstrap CI over the pairs."""
    v = np.array([x for x in values if np.isfinite(x)])
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def fmt(value: float, ci: tuple[float, float] | None = None) -> str:
    if not np.isfinite(value):
        return "n/a (constant)"
    return f"{value:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci is not None else "")


def source_table(tname: str, pred: dict, gt: dict, zoo) -> list[str]:
    names = [s.name for s in zoo]
    truth = np.array([gt[n]["accuracy"] for n in names])
    predictors = list(pred[names[0]]["values"]) + ["random (seed 0)"]
    random = np.random.default_rng(0).random(len(names))
    lines = ["| predictor | weighted tau [95% CI] | Spearman [95% CI] | cost / ground truth |", "|---|---|---|---|"]
    gt_seconds = np.mean([gt[n]["seconds"] for n in names])
    for p in predictors:
        x = random if p.startswith("random") else np.array([pred[n]["values"][p] for n in names])
        cost = "0" if p.startswith("random") or p in ("source accuracy", "parameter count") else \
            f"{np.mean([pred[n]['seconds'][p] for n in names]) / gt_seconds:.4f}"  # fmt: skip
        cells = [fmt(correlation(x, truth, k), boot_ci(x, truth, k)) for k in ("weightedtau", "spearman")]
        lines.append(f"| {p} | {cells[0]} | {cells[1]} | {cost} |")
    lines.append(f"\nGround truth: mean target test accuracy over {gt[names[0]]['seeds']} fine-tuning seeds, "
                 f"{gt_seconds:.1f} s of fine-tuning per source on average.")  # fmt: skip
    return [f"### Ranking {len(names)} sources for {tname}", ""] + lines + [""]


def layer_table(pred: dict, gt: dict, zoo, targets) -> list[str]:
    pairs = [(t, s.name) for t in targets for s in zoo]
    first = pred[pairs[0][0]][pairs[0][1]]["layers"]["rows"]
    predictors = list(next(iter(first.values()))["values"]) + ["random (seed 0)"]
    per_pair: dict[str, dict[str, list[float]]] = {p: {"spearman": [], "weightedtau": []} for p in predictors}
    for i, (t, s) in enumerate(pairs):
        rows = pred[t][s]["layers"]["rows"]
        truth = np.array([gt[t][s]["layers"][name] for name in rows])
        random = np.random.default_rng(i).random(len(rows))
        for p in predictors:
            x = random if p.startswith("random") else np.array([rows[name]["values"][p] for name in rows])
            for kind in ("spearman", "weightedtau"):
                per_pair[p][kind].append(correlation(x, truth, kind))
    gt_seconds = np.mean([gt[t][s]["layer_seconds"] for t, s in pairs])
    lines = ["| predictor | weighted tau, mean [95% CI] | Spearman, mean [95% CI] | Spearman >= 0.8 | cost / ground truth |",
             "|---|---|---|---|---|"]  # fmt: skip
    for p in predictors:
        tau, rho = mean_ci(per_pair[p]["weightedtau"]), mean_ci(per_pair[p]["spearman"])
        hits = sum(r >= 0.8 for r in per_pair[p]["spearman"] if np.isfinite(r))
        costs = [pred[t][s]["layers"]["seconds"].get(p) for t, s in pairs]
        cost = f"{np.mean(costs) / gt_seconds:.4f}" if costs[0] is not None else "0"
        lines.append(f"| {p} | {fmt(tau[0], tau[1:])} | {fmt(rho[0], rho[1:])} | {hits}/{len(pairs)} | {cost} |")
    n_layers = len(first)
    lines.append(f"\nPer (source, target) pair: correlation over the {n_layers} depths k = 1..{n_layers} between the "
                 f"predictor at depth k and the target test accuracy after fine-tuning with units 1..k frozen "
                 f"(mean over {gt[pairs[0][0]][pairs[0][1]]['layer_seeds']} seeds); mean over {len(pairs)} pairs, "
                 f"CI by resampling pairs. Ground truth cost: {gt_seconds:.1f} s of fine-tuning per pair.")  # fmt: skip
    title = ["### Ranking the reuse depth k (units 1..k frozen), per layer", ""]
    return title + lines + [""] + _pair_lines(per_pair, pairs)


def _pair_lines(per_pair: dict, pairs: list) -> list[str]:
    keys = [p for p in (OURS_LAYER, OURS_LAYER_KEPT, "logme", "shallower first (-k)") if p in per_pair]
    header = "| target | source | " + " | ".join(keys) + " |"
    lines = ["Spearman per pair:", "", header, "|---|---|" + "---|" * len(keys)]
    for i, (t, s) in enumerate(pairs):
        lines.append(f"| {t} | {s} | " + " | ".join(fmt(per_pair[k]["spearman"][i]) for k in keys) + " |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds of the source-level ground truth")
    parser.add_argument("--layer-seeds", type=int, default=2, help="seeds per frozen depth k")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ", ".join(TARGETS))
    parser.add_argument("--quick", action="store_true", help="four sources, one seed: a smoke run")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-predict"))
    args = parser.parse_args()
    start = time.perf_counter()
    zoo = ZOO[:4] if args.quick else ZOO
    seeds, layer_seeds = (1, 1) if args.quick else (args.seeds, args.layer_seeds)
    records = train_zoo(args.out, zoo)
    targets = load_targets(args.targets.split(","))
    gt = ground_truth(zoo, records, targets, args.out, seeds, layer_seeds)
    pred = predict(zoo, records, targets, args.out)
    lines = ["## Sources in the zoo", "", "| source | arch | classes | images/class | epochs | label noise | source test acc |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {s.name} | {s.arch} | {s.classes} | {s.per_class} | {s.epochs} | {s.noise:.0%} | "
              f"{records[s.name]['test_metric']:.3f} |" for s in zoo]  # fmt: skip
    lines += ["", "## Ranking sources", ""]
    for t in targets:
        lines += source_table(t, pred[t], gt[t], zoo)
    lines += ["## Ranking layers", ""] + layer_table(pred, gt, zoo, targets)
    seconds = time.perf_counter() - start
    lines.append(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); total {seconds:.0f} s")
    text = "\n".join(lines)
    print(text)
    (args.out / "predict.md").write_text(text + "\n")
    write_json(args.out / "predict.json", {"ground_truth": gt, "predictors": pred})


if __name__ == "__main__":
    main()
