"""Render ``report.html`` (plots embedded) and the plots as PNG files beside it."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from paramreuse.report import plots
from paramreuse.results import read_json, write_atomic

REPORT_FILE = "report.html"
MODEL_LABELS = {
    "source": "S (source, on its own classes)",
    "target": "T (S fine-tuned on the target shots)",
    "scratch": "T_scratch (trained on the shots from scratch)",
    "full": "T_full (S fine-tuned on the full target set)",
}
STYLE = """body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.verdict{font-size:1.2em;background:#f3f7f3;padding:.8em}"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _figure(out: Path, name: str, png: bytes, alt: str) -> str:
    write_atomic(out / f"{name}.png", png)
    data = base64.b64encode(png).decode()
    return f'<img id="{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` for the study in ``run_dir`` from its ``results.json``."""
    out = Path(run_dir)
    results = read_json(out / "results.json")
    models, metric = results["models"], results["metric"]
    t, s = models["target"]["test_metric"], models["scratch"]["test_metric"]
    shots = results["config"]["target"]["shots"]
    gain = results["gains"]["target_vs_scratch"]
    transfer = read_json(out / results["transfer"]["file"])
    plan = results["plan"]
    reused = [name for name, d in plan["decisions"].items() if d != "reinit"]
    verdict = (
        f"Starting from S, {shots} shots per class reach {metric} {t:.3f} on the target test set, "
        f"against {s:.3f} from scratch ({gain['mean']:+.3f}, 95% CI {gain['ci'][0]:+.3f} to {gain['ci'][1]:+.3f}). "
        f"The network is {'' if plan['network_reusable'] else 'not '}reusable as a whole (J1 drop "
        f"{plan['network_drop']:+.3f}, threshold {plan['thresholds']['network_tolerance']}); the plan reuses "
        f"{len(reused)} of {len(plan['decisions'])} units."
    )
    model_rows = [[MODEL_LABELS.get(n, n), m["evaluated_on"], m["test_metric"]] for n, m in models.items()]
    comparisons = results["comparisons"]
    layer_rows = [
        [row["name"]] + [comparisons[k]["layers"][i]["rmse_raw"] for k in comparisons] + [row["rmse_null"]]
        for i, row in enumerate(comparisons["target"]["layers"])
    ]
    sections = [
        f"<h1>paramreuse study</h1><p class='verdict' id='verdict'>{html.escape(verdict)}</p>",
        "<h2 id='models'>Models</h2>" + _table(["model", "evaluated on", f"test {metric}"], model_rows),
        _figure(out, "metrics", plots.model_metrics(models, metric), "test metric per model"),
        "<h2 id='rmse'>Kernel RMSE per unit</h2>"
        + _table(["unit"] + [f"raw RMSE S vs {k}" for k in comparisons] + ["null (random init)"], layer_rows),
        _figure(out, "rmse", plots.rmse_per_layer(comparisons), "kernel RMSE per unit"),
        "<h2 id='transfer'>Transfer: the plan against the other strategies</h2>"
        + _table(["strategy", f"mean {metric}", "95% CI over seeds"],
                 [[n, e["mean"], f"{e['ci'][0]:.4f} to {e['ci'][1]:.4f}"] for n, e in transfer["strategies"].items()])
        + _table(["test", "p"], [[k, "n/a" if v["p"] is None else f"{v['p']:.3g}"] for k, v in transfer["significance"].items()]),
        _figure(out, "transfer", plots.transfer_strategies(transfer), "strategies x shots"),
        "<h2 id='environment'>Configuration and environment</h2><pre>"
        + html.escape(_pretty({"config": results["config"], "environment": results["environment"]}))
        + "</pre>",
    ]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>paramreuse report</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    return write_atomic(out / REPORT_FILE, page.encode())


def _pretty(obj) -> str:
    import json

    return json.dumps(obj, indent=2)
