"""Benchmark permutation alignment and the J3 distances; prints two tables measured in one run.

1. Seconds for weight matching (CPU) on random-init pairs of different seeds, 3 input channels:
   builtin CNN, torchvision resnet18 and resnet50 (goal: resnet50 under 10 s).
2. Per-layer raw vs aligned vs normalised RMSE with the null reference, for a builtin CNN S
   trained on Fashion-MNIST classes 0-4 against T fine-tuned from S on classes 5-9 and against
   T trained on 5-9 from its own initialisation; plus the lineage each pair is given.

Run: ``.venv/bin/python bench/align.py`` (``--quick`` for a smaller, faster run).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from paramreuse.align.matching import align_models
from paramreuse.data import load_task
from paramreuse.judge.kernels import LINEAGE_RULE, compare_models
from paramreuse.models import build_model
from paramreuse.training.loop import TrainConfig, evaluate, train

TIMING_ARCHS = ("builtin:cnn", "torchvision:resnet18", "torchvision:resnet50")


def timing_table(archs: tuple[str, ...], repeats: int) -> None:
    print("## Weight matching, random-init pairs (seeds 0 and 1), CPU")
    print(f"{'arch':24s} {'params':>10s} {'groups':>7s} {'channels':>9s} {'sweeps':>7s} {'seconds':>8s}")
    for arch in archs:
        torch.manual_seed(0)
        a = build_model(arch, 3, 10)
        torch.manual_seed(1)
        b = build_model(arch, 3, 10)
        runs = [align_models(a, b, "weights", seed=r) for r in range(repeats)]
        best = min(runs, key=lambda r: r.seconds)
        info = best.to_dict()
        params = sum(p.numel() for p in a.parameters())
        print(f"{arch:24s} {params:>10,d} {info['groups']:>7d} {info['channels']:>9d} {info['iterations']:>7d} "
              f"{best.seconds:>8.2f}")  # fmt: skip
    print(f"(best of {repeats}; seconds include tracing, shape propagation and building the permuted copy)\n")


def trained_models(limit: int, epochs: int) -> dict:
    """S on 0-4; T fine-tuned from S on 5-9; T trained on 5-9 from its own initialisation."""
    source_task = load_task("fashion-mnist", "0-4", limit_per_class=limit, seed=0)
    target_task = load_task("fashion-mnist", "5-9", limit_per_class=limit, seed=0)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3)
    torch.manual_seed(0)
    source = build_model("builtin:cnn", 1, 5)
    train(source, source_task.train, config, seed=0)
    finetuned = copy.deepcopy(source)
    train(finetuned, target_task.train, TrainConfig(epochs=1, batch_size=64, lr=1e-3), seed=1)
    torch.manual_seed(1)
    independent = build_model("builtin:cnn", 1, 5)
    train(independent, target_task.train, config, seed=1)
    accuracy = {
        "S on 0-4": evaluate(source, source_task.test),
        "T fine-tuned on 5-9": evaluate(finetuned, target_task.test),
        "T independent on 5-9": evaluate(independent, target_task.test),
    }
    return {"source": source, "finetuned": finetuned, "independent": independent, "accuracy": accuracy,
            "sizes": (len(source_task.train), len(target_task.train))}  # fmt: skip


def rmse_table(title: str, comparison) -> None:
    info = comparison.alignment
    print(f"### {title}: lineage {comparison.lineage} (detected), alignment {info['method']} "
          f"({info['seconds']:.2f} s)")  # fmt: skip
    print(f"{'layer':14s} {'kind':7s} {'shape':16s} {'rmse_raw':>9s} {'rmse':>9s} {'rmse_norm':>9s} "
          f"{'rmse_null':>9s} {'raw/null':>8s} {'null_pos':>8s} {'cosine':>7s}")  # fmt: skip
    for layer in comparison.layers:
        print(f"{layer.name:14s} {layer.kind:7s} {layer.shape!s:16s} {layer.rmse_raw:9.4f} {layer.rmse:9.4f} "
              f"{layer.rmse_normalized:9.3f} {layer.rmse_null:9.4f} {layer.rmse_raw / layer.rmse_null:8.3f} "
              f"{layer.null_position:8.3f} {layer.cosine:7.3f}")  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="resnet18 only, fewer images")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is shown)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    timing_table(TIMING_ARCHS[:2] if args.quick else TIMING_ARCHS, args.repeats)

    limit, epochs = (200, 1) if args.quick else (1000, 2)
    start = time.perf_counter()
    models = trained_models(limit, epochs)
    print(f"## J3 distances, builtin CNN (width 16) on Fashion-MNIST, {models['sizes'][0]} source and "
          f"{models['sizes'][1]} target training images, {epochs} epoch(s); trained in "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    print("test accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in models["accuracy"].items()))
    print(f"lineage rule: {LINEAGE_RULE}\n")
    for name in ("finetuned", "independent"):
        rmse_table(f"S vs T {name}", compare_models(models["source"], models[name]))
    probe = load_task("fashion-mnist", "5-9", limit_per_class=60, seed=1).val.x[:256]
    activations = compare_models(models["source"], models["independent"], align="activations", data=probe)
    rmse_table("S vs T independent, activation matching on 256 target images", activations)


if __name__ == "__main__":
    main()
