"""Tables from a finished study run: J3 per pair, the companion findings, threshold calibration.

    .venv/bin/python bench/study_tables.py runs/demo

Reads only the run's result files (run `make demo` or `paramreuse study --out DIR` first).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from paramreuse.judge.verdicts import holds_text
from paramreuse.results import units_aligned_text

PAIRS = {"comparison.json": "S vs T (fine-tuned on the shots)", "comparison-full.json": "S vs T_full",
         "comparison-scratch.json": "S vs T_scratch (independent)"}  # fmt: skip
GROUPS = ("conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.stats", "unit")


def markdown(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows])


ALIGNED_TEXT = {True: "yes", False: "no", None: "–"}  # None: a run from before units said it


def alignment_text(alignment: dict) -> str:
    """The method, the units it aligned and its note, as far as the file says."""
    count = units_aligned_text(alignment)
    text = f"alignment {alignment['method']}" + (f", {count}" if count else "")
    return text + (f" ({alignment['note']})" if alignment.get("note") else "")


def j3_tables(run: Path) -> str:
    out = []
    for file, title in PAIRS.items():
        c = json.loads((run / file).read_text())
        rows = [[r["name"], ALIGNED_TEXT[r.get("aligned")], r["rmse_raw"], r["rmse"], r["rmse_normalized"],
                 r["rmse_null"], r["null_position"]] for r in c["layers"]]  # fmt: skip
        out.append(f"**{title}**: lineage {c['lineage']}, {alignment_text(c['alignment'])}\n")
        header = ["unit", "aligned", "rmse_raw", "rmse (aligned)", "rmse_normalized", "rmse_null", "rmse/null"]
        out.append(markdown(header, rows))
    return "\n\n".join(out)


def findings_table(run: Path) -> str:
    sweep = json.loads((run / "replacement.json").read_text())
    rows = []
    for group in GROUPS:
        drops = [r["drop"] for r in sweep["rows"] if r["params"] == group]
        if drops:
            rows.append([group, len(drops), statistics.mean(drops), statistics.pstdev(drops), min(drops), max(drops)])
    table = markdown(["parameter group", "units", "mean drop", "sd over units", "min", "max"], rows)
    claims = markdown(["companion finding", "holds here"], [[f["finding"], holds_text(f["holds"])] for f in sweep["findings"]])
    return f"baseline {sweep['metric']} {sweep['baseline']:.4f} on {sweep['timing']['samples_full'] // max(1, len(sweep['rows']) + len(sweep['cumulative']) + len(sweep['network']))} target validation images\n\n{table}\n\n{claims}"


def calibration(run: Path) -> str:
    sweep = json.loads((run / "replacement.json").read_text())
    rows = sweep["rows"] + sweep["cumulative"] + list(sweep["network"].values())
    full = max(r["n"] for r in rows)
    halves = [(r["ci"][1] - r["ci"][0]) / 2 for r in rows if r["ci"][1] > r["ci"][0] and r["n"] == full]
    positions = {}
    for file, title in PAIRS.items():
        layers = json.loads((run / file).read_text())["layers"]
        values = [r["null_position"] for r in layers if r["null_position"] is not None]
        positions[title] = (min(values), statistics.median(values), max(values))
    lines = [
        (f"- 95% CI half-width of a row's drop: median {statistics.median(halves):.4f}, max {max(halves):.4f} "
         f"({len(halves)} rows evaluated on all {full} images with a non-degenerate CI)"),
    ]
    lines += [f"- rmse/null, {t}: min {a:.3f}, median {b:.3f}, max {c:.3f}" for t, (a, b, c) in positions.items()]
    return "\n".join(lines)


def main() -> None:
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
    results = json.loads((run / "results.json").read_text())
    models = markdown(["model", "test accuracy"], [[n, m["test_metric"]] for n, m in results["models"].items()])
    print(f"## Study run {run}\n\n{models}\n\n## J3 per pair\n\n{j3_tables(run)}\n\n"
          f"## Replacement by parameter group (S into T)\n\n{findings_table(run)}\n\n## Calibration\n\n{calibration(run)}")  # fmt: skip


if __name__ == "__main__":
    main()
