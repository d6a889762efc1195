"""Matplotlib figures of a study, returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PAIR_LABELS = {"target": "S vs T (fine-tuned)", "full": "S vs T_full", "scratch": "S vs T_scratch"}


def rmse_per_layer(comparisons: dict) -> bytes:
    """Raw and aligned kernel RMSE per unit for each pair, with the random-init null as a dashed line."""
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    null_drawn = False
    for key, comparison in comparisons.items():
        layers = comparison["layers"]
        xs = range(len(layers))
        line = ax.plot(xs, [row["rmse"] for row in layers], marker="o", label=PAIR_LABELS.get(key, key))[0]
        if not null_drawn:
            ax.plot(xs, [row["rmse_null"] for row in layers], "k--", label="null: T vs random init")
            null_drawn = True
        if comparison.get("lineage") == "independent":
            ax.plot(xs, [row["rmse_raw"] for row in layers], ":", color=line.get_color(), label=f"{key} (raw, unaligned)")
    names = [row["name"] for row in next(iter(comparisons.values()))["layers"]]
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("kernel RMSE")
    ax.set_title("Kernel distance to S, per unit")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def model_metrics(models: dict, metric: str) -> bytes:
    """Bar chart of each model's test metric."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=110)
    names = list(models)
    ax.bar(names, [models[n]["test_metric"] for n in names], color=["#777", "#2a7", "#c44", "#37c"][: len(names)])
    ax.set_ylabel(f"test {metric}")
    ax.set_ylim(0, 1)
    for i, n in enumerate(names):
        ax.text(i, models[n]["test_metric"] + 0.01, f"{models[n]['test_metric']:.3f}", ha="center", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def transfer_strategies(doc: dict) -> bytes:
    """Mean target metric per strategy and shots, with 95% CI error bars over seeds."""
    fig, ax = plt.subplots(figsize=(8, 3.4), dpi=110)
    shots = doc["shots"]
    names = list(doc["strategies"])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        entries = [doc["strategies"][name]["by_shots"][str(n)] for n in shots]
        means = [e["mean"] for e in entries]
        err = [[m - e["ci"][0] for m, e in zip(means, entries)], [e["ci"][1] - m for m, e in zip(means, entries)]]
        ax.bar([j + i * width for j in range(len(shots))], means, width, yerr=err, capsize=2, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(shots))], [f"{n} shots" for n in shots])
    ax.set_ylabel(f"target test {doc['metric']}")
    ax.set_ylim(0, 1)
    ax.set_title(f"Strategies on the target (95% CI over {doc['seeds']} seeds)")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    return _png(fig)
