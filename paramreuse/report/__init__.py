"""The HTML report, rendered from the result files only."""

from paramreuse.report.html import render_report

__all__ = ["render_report"]
