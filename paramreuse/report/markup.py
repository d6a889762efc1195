"""The HTML of the report: its style sheet, tables with marked cells, embedded figures, CIs as text."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from paramreuse.report.verdict import MetricStyle
from paramreuse.results import write_atomic

NUMBER = re.compile(r"^[+-]?\d")
STYLE = """body{font-family:system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;color:#222}
nav a{margin-right:.9em;font-size:.9em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1em;margin:1em 0 .2em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .55em;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.no{color:#b33;text-align:center}td.yes{color:#275;text-align:center}
.verdict{font-size:1.1em;background:#eef6ef;border-left:.3em solid #2a7;padding:.5em 1em}
.verdict p{margin:.3em 0}.verdict p.elsewhere{color:#8a4b00}
.verdict.no{background:#fbf0ee;border-left-color:#c44}
.warnings{background:#fff5d6;border:1px solid #e0b000;border-left:.3em solid #e0a000;padding:.5em 1em;margin:.8em 0}
.warnings ul{margin:.3em 0}td.undecided{color:#a60;text-align:center;font-weight:bold}
figure{margin:1em 0}figure img{max-width:100%}
figcaption{font-size:.85em;color:#555}summary{cursor:pointer;margin:.5em 0}
pre{font-size:.8em;background:#f6f6f6;padding:.6em}
@media print{nav{display:none}section{break-inside:avoid-page}}"""


@dataclass(frozen=True)
class Mark:
    """A table cell shown as ``text`` with the CSS class ``kind`` (``yes``, ``no``, ``undecided``)."""

    text: str
    kind: str


def fmt_cell(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}"
    return "–" if v is None else str(v)


def table(header: list[str], rows: list[list], caption: str = "") -> str:
    """An HTML table: numbers right-aligned, yes/no coloured, a caption above it."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)

    def cell(v) -> str:
        if isinstance(v, Mark):
            return f"<td class='{v.kind}'>{html.escape(v.text)}</td>"
        text = fmt_cell(v)
        kind = text if isinstance(v, bool) else "n" if NUMBER.match(text) else "t"
        return f"<td class='{kind}'>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    cap = f"<h3>{html.escape(caption)}</h3>" if caption else ""
    return f"{cap}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(out: Path, name: str, png: bytes, caption: str) -> str:
    write_atomic(out / f"{name}.png", png)
    data = base64.b64encode(png).decode()
    alt = html.escape(caption)
    image = f'<img id="fig-{name}" alt="{alt}" src="data:image/png;base64,{data}">'
    return f"<figure>{image}<figcaption>{alt}</figcaption></figure>"


def ci_text(ci, style: MetricStyle, signed: bool = False) -> str:
    return "–" if not ci else f"{style.number(ci[0], signed)} to {style.number(ci[1], signed)}"
