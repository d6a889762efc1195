"""The HTML report, rendered from the result files only."""

from paramreuse.report.html import FIGURES, REPORT_FILE, SECTIONS, load_run, render_report, run_verdict
from paramreuse.report.verdict import MetricStyle, metric_style, sides_text, strategy_label, verdict_sentence

__all__ = [
    "FIGURES",
    "REPORT_FILE",
    "SECTIONS",
    "MetricStyle",
    "load_run",
    "metric_style",
    "render_report",
    "run_verdict",
    "sides_text",
    "strategy_label",
    "verdict_sentence",
]
