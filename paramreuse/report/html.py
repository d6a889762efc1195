"""Render ``report.html`` (one self-contained file, plots embedded) and the plots as PNG files beside it.

Everything comes from the result files of a run folder; nothing is recomputed.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from paramreuse.errors import ParamreuseError
from paramreuse.report import markup, plots
from paramreuse.report.answer import Answer, answer_box
from paramreuse.report.markup import STYLE, Mark
from paramreuse.report.verdict import (
    MetricStyle,
    best_strategy,
    comparison_label,
    is_oracle,
    metric_style,
    reuses,
    sides_text,
    strategy_label,
    undecided_units,
    unit_j2,
    verdict_sentence,
)
from paramreuse.results import read_json, units_aligned_text, write_atomic
from paramreuse.stats import MIN_SEEDS, not_enough_seeds

REPORT_FILE = "report.html"
RESULTS_FILE = "results.json"
# Stable section ids, in page order: tests and links rely on them.
SECTIONS = {
    "verdict": "Verdict",
    "models": "Models",
    "rmse": "Kernel distance per unit (J3)",
    "replacement": "Replacement drops per unit and parameter group (J2)",
    "cumulative": "Cumulative depth: units 1..k replaced together",
    "plan": "The plan, unit by unit",
    "transfer": "Transfer: strategies x shots",
    "thresholds": "Thresholds used",
    "environment": "Configuration, versions and device",
}
FIGURES = ("metrics", "rmse", "replacement", "cumulative", "transfer")
J1_VARIANTS = {
    "conv_kernels_bn_kept": "all of S's conv kernels in T, T's BN statistics kept",
    "conv_kernels_bn_recalibrated": "all of S's conv kernels in T, BN statistics re-estimated on target data",
}
MODEL_LABELS = {
    "source": "S (source, on its own classes)",
    "target": "T (S fine-tuned on the target shots)",
    "scratch": "T_scratch (trained on the shots from scratch)",
    "full": "T_full (S fine-tuned on the full target set)",
}



@dataclass(frozen=True, eq=False)
class RunFiles:
    """The result files of one study run folder."""

    results: dict
    plan: dict
    sweep: dict
    transfer: dict
    comparisons: dict  # pair name -> comparison file content; the judged pair (S vs T) first


def load_run(run_dir: str | Path) -> RunFiles:
    """Read a study's result files; a folder that is not a study run is a clean error."""
    run = Path(run_dir)
    if not (run / RESULTS_FILE).is_file():
        raise ParamreuseError(f"{run} has no {RESULTS_FILE}; pass the --out folder of a finished `paramreuse study`")
    results = read_json(run / RESULTS_FILE)
    comparisons = {}
    for name, entry in results["comparisons"].items():
        path = run / entry["file"]
        comparisons[name] = read_json(path) if path.is_file() else entry
    return RunFiles(
        results, read_json(run / results["plan"]["file"]), read_json(run / results["replacement"]["file"]),
        read_json(run / results["transfer"]["file"]), comparisons,
    )  # fmt: skip


def run_style(run: RunFiles) -> MetricStyle:
    """The metric's style, its units inferred from the models' values when the task registry does not know it."""
    values = [m["test_metric"] for m in run.results["models"].values() if m["test_metric"] is not None]
    return metric_style(run.results["metric"], values, run.results.get("units"))


def run_verdict(run: RunFiles) -> str:
    """The verdict in one long sentence (the rule, both gains with their p), shown below the first box."""
    return verdict_sentence(run.plan, run.transfer, run_style(run))


def run_answer(run: RunFiles) -> Answer:
    """The first box: decision, evidence, expected gain, model, and where the study's own numbers point elsewhere."""
    return answer_box(run.plan, run.transfer, run_style(run), run.results)


def answer_html(box: Answer, kind: str) -> str:
    """The box as the report's first element (``id='verdict-sentence'``), one labelled line each."""
    lines = "".join(f"<p class='{key}'><strong>{html.escape(label)}:</strong> {html.escape(text)}</p>"
                    for key, label, text in box.entries())  # fmt: skip
    return f"<div class='{kind}' id='verdict-sentence' role='status'>{lines}</div>"


J2_MARKS = {"reusable": "yes", "not reusable": "no", "undecided": "undecided"}


def _warnings(run: RunFiles) -> str:
    """The study's caveats (small validation set, a model at chance, ...) in a box that cannot be missed."""
    warnings = run.results.get("warnings") or []
    if not warnings:
        return ""
    items = "".join(f"<li>{html.escape(str(w))}</li>" for w in warnings)
    return f"<div class='warnings' id='warnings' role='note'><strong>Warnings</strong><ul>{items}</ul></div>"


def _strategy_items(run: RunFiles, style: MetricStyle) -> list[str]:
    """The best strategy a user can run, and the oracle's score beside it."""
    shots, strategies = run.transfer.get("headline_shots"), run.transfer.get("strategies", {})
    best = best_strategy(run.transfer, oracles=False)
    items = [f"Best strategy at {shots} shots: {best[0]} ({style.fmt(best[1])})."] if best else []
    for name, entry in strategies.items():
        if is_oracle(name, entry):
            items.append(f"{strategy_label(name, entry)} at {shots} shots: {style.fmt(entry['mean'])}; it picks "
                         f"with held-out labelled images, so it is a bound, not a rival strategy.")  # fmt: skip
    return items


def _verdict(run: RunFiles, style: MetricStyle) -> str:
    plan, res = run.plan, run.results
    kind = "verdict" if reuses(plan) else "verdict no"
    items = [f"The verdict in full: {run_verdict(run)}"]
    j1 = plan.get("network_j1")
    for key, entry in run.sweep.get("network", {}).items():
        items.append(f"J1, the paper's network test ({J1_VARIANTS.get(key, key)}): {style.name} "
                     f"{style.fmt(entry['value'])}, drop {style.fmt(entry['drop'], True)} "
                     f"(95% CI {markup.ci_text(entry['ci'], style, True)}) from T's {style.fmt(plan['baseline'])}"
                     + (f"; the better variant is {j1} against the tolerance {plan['thresholds']['network_tolerance']}"
                        " (reported; the network decision above decides)" if j1 else ""))  # fmt: skip
    items.append(f"Reusable depth (units 1..k within {plan['thresholds']['layer_tolerance']} of T): "
                 f"{plan['reusable_depth']} of {len(plan['layers'])} units; "
                 f"lineage of S and T: {plan['lineage']}.")  # fmt: skip
    gain = res.get("gains", {}).get("target_vs_scratch")
    if gain:
        items.append(f"T (S fine-tuned on the shots) minus T_scratch on the target test set: "
                     f"{style.fmt(gain['mean'], True)} (95% CI {markup.ci_text(gain['ci'], style, True)}, "
                     f"{gain.get('ci_over', 'paired bootstrap')}).")  # fmt: skip
    undecided = undecided_units(plan)
    if undecided:
        items.append(f"J2 undecided for {', '.join(undecided)}: the 95% CI of the drop straddles the tolerance "
                     f"{plan['thresholds']['layer_tolerance']}, so the sweep cannot say whether S's values fit there "
                     f"(see the plan table).")  # fmt: skip
    items += _strategy_items(run, style)
    model = res.get("model")
    if model:  # the model the verdict recommends, written beside results.json
        items.append(f"The recommended model ({model['strategy']}, seed {model['seed']}, {model['shots']} shots per "
                     f"class, test {style.name} {style.fmt(model['test_metric'])}) is {model['path']}: load it with "
                     "`paramreuse train --init FILE` or paramreuse.load_checkpoint(FILE).")  # fmt: skip
    bullets = "".join(f"<li>{html.escape(i)}</li>" for i in items)
    return f"{answer_html(run_answer(run), kind)}{_warnings(run)}<ul>{bullets}</ul>"


def _models(run: RunFiles, style: MetricStyle, out: Path) -> str:
    """Each model's test metric; the chart shows the models measured in the target's metric."""
    models = run.results["models"]
    rows = []
    for name, m in models.items():
        if m["test_metric"] is None:  # a given S without source data is not evaluated
            rows.append([MODEL_LABELS.get(name, name), m["evaluated_on"], "–", "–", m.get("train_seconds")])
            continue
        own = metric_style(m["metric"], [m["test_metric"]]) if m.get("metric", style.name) != style.name else style
        rows.append([MODEL_LABELS.get(name, name), m["evaluated_on"], own.name, own.fmt(m["test_metric"]),
                     m.get("train_seconds")])  # fmt: skip
    charted = {n: m for n, m in models.items() if m.get("metric", style.name) == style.name and m["test_metric"] is not None}
    caption = f"Test {style.name} of each model measured in it."
    figure = markup.figure(out, "metrics", plots.model_metrics(charted, style), caption)
    return markup.table(["model", "evaluated on", "metric", "test value", "training seconds"], rows) + figure


def _position(row: dict) -> float | None:
    """Where the aligned RMSE sits between 0 (S's kernel is T's) and the random-init null (1)."""
    if row.get("null_position") is not None:
        return row["null_position"]
    return row["rmse"] / row["rmse_null"] if row.get("rmse_null") else None


RMSE_COLUMNS = ["unit", "kind", "shape", "aligned", "raw", "aligned RMSE", "normalised", "null", "aligned/null", "J3"]
# Whether S's unit was permuted to match T's: neutral text, as "no" is expected for a fine-tuned pair.
ALIGNED_MARKS = {True: Mark("yes", "t"), False: Mark("no", "t"), None: Mark("–", "t")}  # None: an older file


def _alignment_caption(alignment: dict) -> str:
    """The method, and how many units it aligned when the file says (older ones do not)."""
    count = units_aligned_text(alignment)
    return f"alignment {alignment.get('method', '–')}" + (f", {count}" if count else "")


def _rmse(run: RunFiles, out: Path) -> str:
    threshold = run.plan["thresholds"]["rmse_position"]
    parts = []
    for name, comp in run.comparisons.items():
        alignment = comp["alignment"] if isinstance(comp.get("alignment"), dict) else {}
        rows = [[r["name"], r["kind"], "x".join(map(str, r["shape"])), ALIGNED_MARKS[r.get("aligned")], r["rmse_raw"],
                 r["rmse"], r["rmse_normalized"], r["rmse_null"], _position(r),
                 _position(r) is not None and _position(r) <= threshold]
                for r in comp["layers"]]  # fmt: skip
        caption = f"{plots.PAIR_LABELS.get(name, name)}: lineage {comp['lineage']}, {_alignment_caption(alignment)}"
        note = f"<p class='note'>{html.escape(alignment['note'])}</p>" if alignment.get("note") else ""
        parts.append(markup.table(RMSE_COLUMNS, rows, caption) + note)
    caption = (f"Kernel RMSE per unit: raw, after permutation alignment, and normalised by the RMS of T's kernel. "
               f"Grey band: from the J3 threshold ({threshold:g} x null) to the null "
               f"(T vs a random initialisation).")  # fmt: skip
    others = f"<details><summary>The other pairs</summary>{''.join(parts[1:])}</details>" if len(parts) > 1 else ""
    return markup.figure(out, "rmse", plots.rmse_per_unit(run.comparisons, threshold), caption) + parts[0] + others


def _replacement(run: RunFiles, style: MetricStyle, out: Path) -> str:
    sweep, tolerance = run.sweep, run.plan["thresholds"]["layer_tolerance"]
    caption = (f"Drop of T's validation {style.name} (baseline {style.fmt(sweep['baseline'])}) when S's values of "
               f"one parameter group replace T's, unit by unit; red: worse, blue: better, grey: the unit has no "
               f"such group.")  # fmt: skip
    j2 = {layer["name"]: unit_j2(layer) for layer in run.plan["layers"] if unit_j2(layer)}
    figure = markup.figure(out, "replacement", plots.replacement_heatmap(sweep, style, tolerance, j2), caption)
    findings = sweep.get("findings", [])
    rows = [[f["finding"], f["holds"]] for f in findings]
    drops = findings[0].get("mean_drops", {}) if findings else {}
    caption = "Companion paper's findings on this pair; mean drop per group: " + ", ".join(
        f"{k} {style.number(v, True)}" for k, v in drops.items()
    )
    timing = sweep.get("timing", {})
    note = (f"<p>Sweep: {len(sweep['rows'])} rows, engine {timing.get('mode', '–')}, "
            f"adaptive {timing.get('adaptive', '–')}, {timing.get('seconds', 0):.1f} s.</p>")  # fmt: skip
    table = markup.table(["finding", "holds here"], rows, caption) if rows else ""
    return figure + table + note


def _cumulative(run: RunFiles, style: MetricStyle, out: Path) -> str:
    sweep, plan = run.sweep, run.plan
    tolerance = plan["thresholds"]["layer_tolerance"]
    caption = (f"T's validation {style.name} with units 1..k taken from S, for every k (95% CI from the bootstrap "
               f"of the drop); the reusable depth is the largest k within {tolerance:g} of T.")  # fmt: skip
    png = plots.cumulative_depth(sweep, plan["reusable_depth"], style, tolerance)
    figure = markup.figure(out, "cumulative", png, caption)
    rows = [[r["depth"], r["layer"], style.fmt(r["value"]), style.fmt(r["drop"], True), markup.ci_text(r["ci"], style, True)]
            for r in sorted(sweep["cumulative"], key=lambda r: r["depth"])]  # fmt: skip
    return figure + markup.table(["depth k", "last unit", style.name, "drop", "95% CI of drop"], rows)


def _plan(run: RunFiles, style: MetricStyle) -> str:
    """Each unit's J2 and J3 verdicts, the plan's decision, its learning-rate multiplier and the reason."""
    tolerance = run.plan["thresholds"]["layer_tolerance"]
    rows = [[layer["name"], layer.get("kind"), style.number(layer.get("drop"), True),
             markup.ci_text(style.clip(layer.get("ci"), difference=True), style, True),
             Mark(unit_j2(layer) or "–", J2_MARKS.get(unit_j2(layer), "t")), layer.get("reusable_by_rmse"),
             layer["decision"], layer.get("rate"), layer.get("reason")]
            for layer in run.plan["layers"]]  # fmt: skip
    legend = (f"J2 judges the drop of T's {style.name} when S's unit replaces T's against the tolerance "
              f"{tolerance:g}: reusable when its whole 95% CI lies at or below it, not reusable when the CI lies "
              f"above it, undecided when the CI straddles it. J3: the aligned kernel RMSE within "
              f"{run.plan['thresholds']['rmse_position']:g} x the null. Rate: the learning-rate multiplier "
              f"while transferring (0: frozen).")  # fmt: skip
    header = ["unit", "kind", "J2 drop", "95% CI of drop", "J2", "J3", "decision", "rate x", "reason"]
    return f"<p>{html.escape(legend)}</p>" + markup.table(header, rows)


def _per_shots(entry: dict, shots: list[int]) -> list[dict]:
    return [entry["by_shots"][str(n)] for n in shots]


def _seeds(entry: dict, doc: dict) -> int:
    return len(entry["runs"]) if "runs" in entry else doc["seeds"]


def _mean_ci(entry: dict, doc: dict, style: MetricStyle) -> str:
    """``0.812 [0.790 to 0.830]``, or ``0.812 [not enough seeds (2 < 3)]`` below three seeds."""
    n = _seeds(entry, doc)
    interval = markup.ci_text(style.clip(entry.get("ci")), style) if n >= MIN_SEEDS else not_enough_seeds(n)
    return f"{style.number(entry['mean'])} [{interval}]"


def _significance_row(key: str, n: int, entry: dict, doc: dict, style: MetricStyle) -> list:
    """One paired comparison; its p only from three seeds on, whatever an older file holds."""
    enough = entry.get("enough_seeds", doc["seeds"] >= MIN_SEEDS)
    p = "n/a" if entry["p"] is None or not enough else f"{entry['p']:.3g}"
    test = entry["test"] if enough else not_enough_seeds(doc["seeds"])
    return [comparison_label(key, doc["strategies"]), n, style.number(entry.get("mean_diff"), True), p, test]


def _transfer(run: RunFiles, style: MetricStyle, out: Path) -> str:
    doc = run.transfer
    shots = doc["shots"]
    rows = [[strategy_label(name, entry), *(_mean_ci(b, doc, style) for b in _per_shots(entry, shots))]
            for name, entry in doc["strategies"].items()]  # fmt: skip
    caption = f"Target test {style.name}: mean [95% CI over {doc['seeds']} seeds; none below {MIN_SEEDS} seeds]"
    table = markup.table(["strategy", *(f"{n} shots" for n in shots)], rows, caption)
    sig_rows = [_significance_row(key, n, b, doc, style)
                for key, sig in doc["significance"].items() for n, b in zip(shots, _per_shots(sig, shots))]  # fmt: skip
    caption = ("Every strategy trained on the same shots per seed; the plan's unit decisions come from plan.json; "
               "best-depth is an oracle: it picks its depth on held-out labelled images.")  # fmt: skip
    figure = markup.figure(out, "transfer", plots.transfer_strategies(doc, style), caption)
    return figure + table + markup.table(["comparison", "shots", "mean difference", "p", "test"], sig_rows)


THRESHOLD_MEANINGS = {
    "network_tolerance": ("J1", "largest drop for which the whole network counts as reusable"),
    "layer_tolerance": ("J2", "largest replacement drop for which a unit counts as reusable; also the reusable depth"),
    "rmse_position": ("J3", "largest aligned RMSE / null RMSE for which a unit's kernel counts as reusable"),
    "scratch_on": ("network decision", ("se (the calibrated default), mean, ci or never (off): what of S-initialised "
                   "minus fresh training, cross-fitted on the shots, must be below -scratch_margin to train from scratch")),
    "scratch_margin": ("network decision", ("how far below 0 that difference must be to train from scratch (with se: "
                       "in standard errors of its mean)")),
    "scratch_score": ("network decision", ("the per-image score of that difference (correct: 0/1; brier, "
                      "true-prob, log-loss-ts, soft-dice: continuous)")),
}


def _thresholds(run: RunFiles) -> str:
    th = run.plan["thresholds"]
    rows = [[name, value, *THRESHOLD_MEANINGS.get(name, ("", ""))] for name, value in th.items()]
    if "tolerance" in run.sweep:
        rows.append(["sweep tolerance", run.sweep["tolerance"], "sweep", "drop that lets the sweep stop a row early"])
    rules = (("Plan rule", run.plan.get("rule", "")),
             ("Lineage rule", next(iter(run.comparisons.values())).get("lineage_rule", "")))  # fmt: skip
    notes = "".join(f"<p>{label}: {html.escape(text)}</p>" for label, text in rules if text)
    override = ("<p>Override them with <code>--network-tolerance</code>, <code>--layer-tolerance</code> and "
                "<code>--rmse-position</code> (or <code>[thresholds]</code> in the study config).</p>")  # fmt: skip
    return markup.table(["threshold", "value", "judgement", "meaning"], rows) + notes + override


def _environment(run: RunFiles) -> str:
    res = run.results
    cfg = res["config"]
    rows = [["architecture", cfg.get("arch")], ["seed", cfg.get("seed")]]
    rows += [[side, text] for side, text in sides_text(res).items()]
    length = res.get("training")  # the few-shot trainings' length, as asked and as T trained
    if length:
        asked = ", ".join(f"{k} {v}" for k, v in length["asked"].items() if v is not None) or "nothing (the recipe)"
        note = f"; {length['note']}" if length.get("note") else ""
        rows.append(["few-shot training", f"{length['epochs']} epochs, {length['steps']} steps (asked: {asked}){note}"])
    rows.append(["study seconds", res.get("seconds")])
    rows += [[k, v] for k, v in res.get("environment", {}).items()]
    full = html.escape(json.dumps(cfg, indent=2))
    return markup.table(["", "value"], rows) + f"<details><summary>Full configuration</summary><pre>{full}</pre></details>"


def render_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` and the plots as PNG files for the study in ``run_dir``.

    Args:
        run_dir: a study's output folder (holds ``results.json`` and the files it names).
        out_dir: where to write the report and the PNG files; default ``run_dir``.
    """
    try:
        return _render(load_run(run_dir), Path(run_dir), Path(out_dir) if out_dir is not None else Path(run_dir))
    except KeyError as exc:
        raise ParamreuseError(
            f"the result files in {run_dir} lack the key {exc}; they were written by another version: "
            "re-run `paramreuse study` with the same --out to bring them up to date"
        ) from None


def _render(run: RunFiles, run_dir: Path, out: Path) -> Path:
    style = run_style(run)
    bodies = {
        "verdict": _verdict(run, style),
        "models": _models(run, style, out),
        "rmse": _rmse(run, out),
        "replacement": _replacement(run, style, out),
        "cumulative": _cumulative(run, style, out),
        "plan": _plan(run, style),
        "transfer": _transfer(run, style, out),
        "thresholds": _thresholds(run),
        "environment": _environment(run),
    }
    nav = "".join(f"<a href='#{key}'>{key}</a>" for key in SECTIONS)
    sections = "".join(
        f"<section id='{key}'><h2>{html.escape(SECTIONS[key])}</h2>{bodies[key]}</section>" for key in SECTIONS
    )
    footer = (f"<footer><p>Rendered from {html.escape(str(run_dir / RESULTS_FILE))} and the files it names; "
              f"re-render with <code>paramreuse report RUN_DIR</code>.</p></footer>")  # fmt: skip
    head = f"<head><meta charset='utf-8'><title>paramreuse report</title><style>{STYLE}</style></head>"
    body = f"<body><h1>paramreuse study</h1><nav>{nav}</nav>{sections}{footer}</body>"
    page = f"<!doctype html><html lang='en'>{head}{body}</html>"
    return write_atomic(out / REPORT_FILE, page.encode())
