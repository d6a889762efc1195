"""Matplotlib figures of a study, each returned as PNG bytes; the metric's units come from a MetricStyle."""

from __future__ import annotations

import io
import math

import matplotlib
import numpy as np

from paramreuse.report.verdict import MetricStyle, strategy_label
from paramreuse.stats import MIN_SEEDS

matplotlib.use("Agg")
import matplotlib.pyplot as plt

PAIR_LABELS = {"target": "S vs T (fine-tuned)", "full": "S vs T_full", "scratch": "S vs T_scratch"}
MODEL_COLOURS = {"source": "#777777", "target": "#2a7", "scratch": "#c44", "full": "#37c"}
DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _unit_axis(ax, names: list[str]) -> None:
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)


def model_metrics(models: dict, style: MetricStyle) -> bytes:
    """Bar chart of each model's test metric."""
    fig, ax = plt.subplots(figsize=(5, 3), dpi=DPI)
    names = list(models)
    values = [models[n]["test_metric"] for n in names]
    ax.bar(names, values, color=[MODEL_COLOURS.get(n, "#999") for n in names])
    ax.set_ylim(*style.limits([0.0, *values], values))
    ax.set_ylabel(f"test {style.name}")
    for i, v in enumerate(values):
        ax.annotate(
            style.fmt(v), (i, v), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points"
        )
    fig.tight_layout()
    return _png(fig)


def rmse_per_unit(comparisons: dict, rmse_position: float) -> bytes:
    """Left: raw and aligned kernel RMSE per unit with the null band; right: RMSE normalised by T's kernel RMS.

    The grey band runs from ``rmse_position`` x null (the J3 threshold) to the null itself, the RMSE
    between T's kernel and a fresh random initialisation: a unit below the band passes J3.
    """
    fig, (ax, axn) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=DPI)
    reference = next(iter(comparisons.values()))["layers"]
    xs = np.arange(len(reference))
    null = np.array([row["rmse_null"] for row in reference], dtype=float)
    ax.fill_between(xs, rmse_position * null, null, color="0.85", label=f"null band ({rmse_position:g}x null to null)")
    ax.plot(xs, null, "k--", lw=1, label="null: T vs random init")
    for key, comparison in comparisons.items():
        layers = comparison["layers"]
        label = PAIR_LABELS.get(key, key)
        line = ax.plot(xs, [row["rmse"] for row in layers], marker="o", ms=4, label=f"{label}, aligned")[0]
        if comparison.get("lineage") == "independent":
            ax.plot(
                xs,
                [row["rmse_raw"] for row in layers],
                ":",
                marker="x",
                ms=4,
                color=line.get_color(),
                label=f"{label}, raw",
            )
        axn.plot(xs, [row["rmse_normalized"] for row in layers], marker="o", ms=4, color=line.get_color(), label=label)
    names = [row["name"] for row in reference]
    for axis, title, ylabel in (
        (ax, "Kernel RMSE to S", "RMSE"),
        (axn, "Normalised by the RMS of T's kernel", "RMSE / RMS(T)"),
    ):
        _unit_axis(axis, names)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(ylabel)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    ax.legend(fontsize=7)
    axn.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _drop_matrix(sweep: dict) -> tuple[list[str], list[str], np.ndarray]:
    """Units x parameter groups of replacement drops (NaN where a unit has no such group)."""
    units = list(dict.fromkeys(row["layer"] for row in sweep["rows"]))
    params = list(dict.fromkeys(row["params"] for row in sweep["rows"]))
    matrix = np.full((len(units), len(params)), np.nan)
    for row in sweep["rows"]:
        if row["drop"] is not None:
            matrix[units.index(row["layer"]), params.index(row["params"])] = row["drop"]
    return units, params, matrix


def replacement_heatmap(sweep: dict, style: MetricStyle, tolerance: float, j2: dict[str, str] | None = None) -> bytes:
    """Drop of T's metric when S's values replace T's, per unit (rows) and parameter group (columns).

    ``j2`` (unit -> "reusable", "not reusable" or "undecided") labels each row with the unit's J2 verdict.
    """
    units, params, matrix = _drop_matrix(sweep)
    j2 = j2 or {}
    fig, ax = plt.subplots(figsize=(1.2 * len(params) + 3, 0.42 * len(units) + 1.6), dpi=DPI)
    finite = matrix[np.isfinite(matrix)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdBu_r", vmin=-(vmax or 1.0), vmax=vmax or 1.0, aspect="auto")
    ax.set_facecolor("0.9")
    for (i, j), value in np.ndenumerate(matrix):
        if math.isnan(value):
            ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="0.5")
            continue
        over = value > tolerance
        colour = "white" if abs(value) > 0.6 * vmax else "black"
        ax.text(
            j,
            i,
            style.number(value, True),
            ha="center",
            va="center",
            fontsize=7,
            color=colour,
            weight="bold" if over else "normal",
        )
    ax.set_xticks(range(len(params)), params, fontsize=8)
    ax.set_yticks(range(len(units)), [f"{u} · J2 {j2[u]}" if u in j2 else u for u in units], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_title(f"Drop of T's {style.name} (bold: above tolerance {tolerance:g})", fontsize=10, pad=22)
    fig.colorbar(image, ax=ax, label=f"drop ({style.units or style.name})", shrink=0.8)
    fig.tight_layout()
    return _png(fig)


def cumulative_depth(sweep: dict, reusable_depth: int, style: MetricStyle, tolerance: float) -> bytes:
    """T's metric with units 1..k replaced by S's, for every k: 95% CIs, the tolerance band, the reusable depth."""
    rows = sorted(sweep["cumulative"], key=lambda r: r["depth"])
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    baseline = sweep["baseline"]
    depths = [r["depth"] for r in rows]
    values = [r["value"] for r in rows]
    lows = [baseline - r["ci"][1] for r in rows]
    highs = [baseline - r["ci"][0] for r in rows]
    ax.axhspan(baseline - tolerance, baseline, color="#cfe8d4", label=f"within tolerance {tolerance:g} of T")
    ax.axhline(baseline, color="#2a7", lw=1.2, label=f"T alone: {style.fmt(baseline)}")
    err = [[v - lo for v, lo in zip(values, lows)], [hi - v for v, hi in zip(values, highs)]]
    ax.errorbar(depths, values, yerr=err, marker="o", capsize=3, color="#c44", label="units 1..k from S (95% CI)")
    if reusable_depth:
        ax.axvline(reusable_depth, color="k", ls="--", lw=1, label=f"reusable depth {reusable_depth}")
    ax.set_xticks(depths, [f"{r['depth']}\n{r['layer']}" for r in rows], fontsize=7)
    ax.set_xlabel("depth k (last unit replaced)")
    ax.set_ylabel(f"target val {style.name}")
    ax.set_ylim(*style.limits([*lows, baseline - tolerance], [*highs, baseline]))
    ax.set_title("Cumulative replacement: units 1..k of T replaced by S's", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _ci(entry: dict, style: MetricStyle, seeds: int) -> list[float]:
    """The entry's CI inside the metric's range; the mean alone below three seeds or without a CI."""
    ci = style.clip(entry.get("ci")) if seeds >= MIN_SEEDS else None
    return ci or [entry["mean"], entry["mean"]]


def _bars(entries: list[dict], style: MetricStyle, seeds: int) -> list[list[float]] | None:
    """Error bars from each entry's CI kept inside the metric's range; none below three seeds (no CI then)."""
    if seeds < MIN_SEEDS:
        return None
    cis = [_ci(e, style, seeds) for e in entries]
    return [[e["mean"] - ci[0] for e, ci in zip(entries, cis)], [ci[1] - e["mean"] for e, ci in zip(entries, cis)]]


def transfer_strategies(doc: dict, style: MetricStyle) -> bytes:
    """Mean target metric per strategy and shots, with 95% CI error bars over seeds (from three seeds on)."""
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=DPI)
    shots, names, seeds = doc["shots"], list(doc["strategies"]), doc["seeds"]
    entries = {n: [doc["strategies"][n]["by_shots"][str(s)] for s in shots] for n in names}
    # Axis from the CIs, but no wider than the means' spread allows: a wide t-interval would flatten the plot.
    means = [e["mean"] for es in entries.values() for e in es]
    margin = 2 * (max(means) - min(means)) or (0.05 if style.bounded else 1.0)
    cis = [_ci(e, style, seeds) for es in entries.values() for e in es]
    lows = [max(ci[0], min(means) - margin) for ci in cis]
    highs = [min(ci[1], max(means) + margin) for ci in cis]
    xs = list(shots) if len(shots) > 1 else list(range(len(names)))
    for name in names:
        means = [e["mean"] for e in entries[name]]
        err, label = _bars(entries[name], style, seeds), strategy_label(name, doc["strategies"][name])
        emphasis = {"lw": 2.5, "ms": 8} if name == "plan" else {"lw": 1.2, "ms": 5}
        if len(shots) > 1:
            ax.errorbar(xs, means, yerr=err, marker="o", capsize=3, label=label, **emphasis)
        else:
            i = names.index(name)
            ax.errorbar([i], means, yerr=err, marker="o", capsize=4, label=label, **emphasis)
            ax.annotate(style.number(means[0]), (i, means[0]), fontsize=7, xytext=(6, 0), textcoords="offset points")
    if len(shots) > 1:
        ax.set_xscale("log")
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_xlabel("shots per class")
    else:
        ax.set_xticks(xs, [strategy_label(n, doc["strategies"][n]) for n in names], fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_xlabel(f"strategy, {shots[0]} shots per class")
    ax.set_ylim(*style.limits(lows, highs))
    ax.set_ylabel(f"target test {style.name}")
    spread = f"95% CI over {seeds} seeds" if seeds >= MIN_SEEDS else f"{seeds} seeds: too few for a CI"
    ax.set_title(f"Strategies on the target (mean, {spread})", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if len(shots) > 1:  # a single shots value names each strategy on the x axis already
        ax.legend(fontsize=7, ncol=3, loc="lower right")
    fig.tight_layout()
    return _png(fig)
