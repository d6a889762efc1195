"""``paramreuse study``: the main job, end to end, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from paramreuse.cli.common import (
    AddressOpt, Backend, BackendOpt, CpusPerJobOpt, DataDirOpt, Device, DeviceOpt, Format, FormatOpt, GpusPerJobOpt,
    OutOpt, ProgressBar, QuietOpt, clean_errors, emit, open_executor, table,
)  # fmt: skip
from paramreuse.cli.plan import print_plan
from paramreuse.cli.transfer import print_transfer
from paramreuse.config import load_toml
from paramreuse.judge import holds_text
from paramreuse.report import load_run, run_verdict
from paramreuse.report.html import MODEL_LABELS
from paramreuse.results import read_json
from paramreuse.study import StudyConfig, quick, run_study
from paramreuse.train import resolve_device


@clean_errors
def study_command(
    config: Annotated[Path | None, typer.Option("--config", help="TOML file with StudyConfig keys (see README).")] = None,
    quick_run: Annotated[bool, typer.Option("--quick", help="Shrink every stage: a smoke run in about a minute.")] = False,
    out: OutOpt = Path("runs/study"),
    fmt: FormatOpt = Format.human,
    seed: Annotated[int | None, typer.Option("--seed", help="Override the config's seed.")] = None,
    device: DeviceOpt = Device.auto,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
    backend: BackendOpt = Backend.local,
    address: AddressOpt = None,
    cpus_per_job: CpusPerJobOpt = 1.0,
    gpus_per_job: GpusPerJobOpt = None,
) -> None:
    """Train S on the source classes, make T (fine-tuned), T_scratch and T_full on the target, compare their kernels.

    Default: Fashion-MNIST classes 0-4 as source, classes 5-9 with 10 shots per class as target,
    builtin CNN. Re-running with the same --out skips finished stages.
    """
    cfg = load_toml(StudyConfig, config) if config else StudyConfig()
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if quick_run:
        cfg = quick(cfg)
    dev = resolve_device(device.value)
    executor = open_executor(backend, address, cpus_per_job, gpus_per_job, dev)
    with executor, ProgressBar(enabled=not quiet and fmt is Format.human) as bar:
        results = run_study(cfg, out, dev, bar, executor)
    emit(results, fmt, lambda console: summary(console, results, out), quiet)


def summary(console, results: dict, out: Path) -> None:
    metric = results["metric"]
    rows = [[MODEL_LABELS.get(n, n), m["evaluated_on"], m["test_metric"]] for n, m in results["models"].items()]
    console.print(table("Models", ["model", "evaluated on", f"test {metric}"], rows))
    gain = results["gains"]["target_vs_scratch"]
    console.print(f"T - T_scratch: {gain['mean']:+.4f} {metric} (95% CI {gain['ci'][0]:+.4f} to {gain['ci'][1]:+.4f}, "
                  f"paired bootstrap over {gain['n']} target test images)")  # fmt: skip
    comparisons = results["comparisons"]
    layer_rows = [
        [row["name"], *(comparisons[k]["layers"][i]["rmse_raw"] for k in comparisons), row["rmse_null"]]
        for i, row in enumerate(comparisons["target"]["layers"])
    ]
    lineages = ", ".join(f"{k}: {c['lineage']}" for k, c in comparisons.items())
    console.print(table(f"Raw kernel RMSE to S per unit (lineage {lineages})",
                        ["unit", *(f"S vs {k}" for k in comparisons), "null"], layer_rows))  # fmt: skip
    print_plan(console, read_json(out / results["plan"]["file"]))
    findings = results["replacement"]["findings"]
    console.print(table("Companion paper's parameter-type findings on this pair",
                        ["finding", "holds"], [[f["finding"], holds_text(f["holds"])] for f in findings]))  # fmt: skip
    print_transfer(console, read_json(out / results["transfer"]["file"]))
    console.print(f"[bold]Verdict:[/] {escape(run_verdict(load_run(out)))}", highlight=False)
    console.print(f"results: {out / 'results.json'}   report: {out / 'report.html'}")
