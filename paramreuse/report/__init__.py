"""The HTML report, rendered from the result files only."""

from paramreuse.report.answer import Answer, answer_box
from paramreuse.report.html import FIGURES, REPORT_FILE, SECTIONS, load_run, render_report, run_answer, run_verdict
from paramreuse.report.verdict import MetricStyle, metric_style, sides_text, strategy_label, verdict_sentence

__all__ = [
    "FIGURES",
    "REPORT_FILE",
    "SECTIONS",
    "Answer",
    "MetricStyle",
    "answer_box",
    "load_run",
    "metric_style",
    "render_report",
    "run_answer",
    "run_verdict",
    "sides_text",
    "strategy_label",
    "verdict_sentence",
]
