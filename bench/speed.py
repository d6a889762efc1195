"""Time to answer: whole studies, stage by stage, on the old path and the new one, in one run.

    .venv/bin/python bench/speed.py                          # default and resnet18 studies: old, new, two side by side
    .venv/bin/python bench/speed.py --cells default:old,default:new   # a part of it (the rest later, same --out)
    .venv/bin/python bench/speed.py --quick                  # study --quick, default scenario: a smoke run
    .venv/bin/python bench/speed.py --limits                 # the tables, and what 1.6x would need

Scenarios: ``default`` is `make demo`'s study (builtin CNN, Fashion-MNIST 0-4 -> 5-9, 10 shots);
``resnet18`` is a torchvision resnet18 study at 64x64 pixels (5 classes, 10 shots; S trained on
300 images per source class for 2 epochs, as no pretrained weights are at hand offline). Variants
of each: ``old`` is today's path before docs/speed.md (``--jobs 1``: every training in this
process on all its threads, and ``PARAMREUSE_FROZEN_CACHE=off``); ``new`` is the default
(``--jobs`` one per usable core, frozen units computed once); ``pair`` is two ``new`` studies
started side by side (what a second user on the machine costs). Each cell is a fresh study in
``--out/SCENARIO-VARIANT``, run as a subprocess without ``OMP_NUM_THREADS`` (as a user runs it);
its record (wall seconds, seconds per stage from its files' times, the load average before and
after, the grid's means, the verdict) is written to ``--out/SCENARIO-VARIANT.json``, and a cell
with a record is not run again (``--again`` reruns). The tables compare whatever records exist.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from paramreuse.cores import usable_cores
from paramreuse.models import build_model
from paramreuse.results import write_json

SCENARIOS = {
    "default": [],
    "resnet18": ["--arch", "torchvision:resnet18", "--size", "64"],
}
RESNET18_CONFIG = """# bench/speed.py: S trained briefly at 64 px (no pretrained weights offline), T_full on 300 per class
full_limit_per_class = 300

[source]
limit_per_class = 300

[training.source]
epochs = 2
batch_size = 64

[training.full]
epochs = 1
batch_size = 64
"""
VARIANTS = ("old", "new", "pair")
# (stage, what marks its end) in the study's order; a stage's time runs from the previous mark to its own
STAGES = (("S", "source"), ("T", "target"), ("T_scratch", "scratch"), ("T_full", "full"),
          ("evidence (cross-fit, sweep, plan, comparisons)", "plan.json comparison-full.json comparison-scratch.json"),
          ("transfer grid", "transfer/transfer.json"), ("model, report", "results.json"))  # fmt: skip


def study_command(scenario: str, out: Path, args: argparse.Namespace, jobs: int) -> list[str]:
    cmd = [sys.executable, "-m", "paramreuse", "study", "--out", str(out), "--format", "json", "--quiet",
           "--device", "cpu", "--jobs", str(jobs), *SCENARIOS[scenario]]  # fmt: skip
    if scenario == "resnet18":
        config = out.parent / "resnet18.toml"
        config.write_text(RESNET18_CONFIG)
        cmd += ["--config", str(config)]
    if args.quick:
        cmd.append("--quick")
    for flag, value in (("--data-dir", args.data_dir), ("--arch", args.arch), ("--min-steps", args.min_steps)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def environment(variant: str) -> dict:
    """A user's environment: no thread count set; the old path without the frozen-prefix cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PARAMREUSE_JOBS")}
    if variant == "old":
        env["PARAMREUSE_FROZEN_CACHE"] = "off"
    return env


def stage_seconds(run_dir: Path, start: float) -> dict[str, float]:
    """Seconds per stage, from the last time a file of each stage was written."""
    def last(mark: str) -> float | None:
        paths = [run_dir / m for m in mark.split()]
        times = [p.stat().st_mtime for path in paths if path.exists()
                 for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()]  # fmt: skip
        return max(times) if times else None

    seconds, previous = {}, start
    for name, mark in STAGES:
        end = last(mark)
        if end is not None:
            seconds[name] = max(0.0, end - previous)
            previous = max(previous, end)
    return seconds


def summary(run_dir: Path) -> dict:
    results = json.loads((run_dir / "results.json").read_text())
    return {"grid": {k: v["mean"] for k, v in results["transfer"]["strategies"].items()},
            "decision": results["plan"]["decision"], "reusable_depth": results["plan"]["reusable_depth"],
            "recommended": results["model"]["strategy"]}  # fmt: skip


def run_cell(scenario: str, variant: str, args: argparse.Namespace) -> dict:
    """Run one cell (two studies at once for ``pair``) from empty folders and return its record."""
    copies = 2 if variant == "pair" else 1
    dirs = [args.out / f"{scenario}-{variant}" / (f"study{i + 1}" if copies > 1 else "study") for i in range(copies)]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    jobs = 1 if variant == "old" else args.jobs
    load_before, start = os.getloadavg(), time.time()
    procs = [subprocess.Popen(study_command(scenario, d, args, jobs), env=environment(variant), stdout=subprocess.DEVNULL,
                              stderr=open(d / "stderr.txt", "w")) for d in dirs]  # noqa: SIM115  # fmt: skip
    walls = []
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"{scenario}:{variant} failed (exit {proc.returncode}); see {dirs[procs.index(proc)]}/stderr.txt")
        walls.append(time.time() - start)
    return {"scenario": scenario, "variant": variant, "jobs": jobs, "wall": max(walls), "walls": walls,
            "load_before": list(load_before), "load_after": list(os.getloadavg()), "usable_cores": usable_cores(),
            "stages": stage_seconds(dirs[0], start), **summary(dirs[0]), "quick": args.quick,
            "command": " ".join(study_command(scenario, dirs[0], args, jobs)[1:])}  # fmt: skip


def cells(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.cells:
        chosen = [tuple(c.split(":", 1)) for c in args.cells.split(",")]
    else:
        chosen = [(s, v) for s in args.scenarios.split(",") for v in VARIANTS]
    for scenario, variant in chosen:
        if scenario not in SCENARIOS or variant not in VARIANTS:
            raise SystemExit(f"unknown cell {scenario}:{variant}; scenarios {', '.join(SCENARIOS)}, variants {', '.join(VARIANTS)}")
    return chosen


def table(records: dict[tuple[str, str], dict], scenario: str) -> list[str]:
    old, new, pair = (records.get((scenario, v)) for v in VARIANTS)
    if old is None and new is None:
        return []
    lines = [f"\n{scenario} study{' (--quick)' if (old or new)['quick'] else ''}: seconds per stage",
             f"{'stage':<48} {'old':>8} {'new':>8} {'old/new':>8}"]  # fmt: skip
    for name, _ in STAGES:
        a, b = (r["stages"].get(name) if r else None for r in (old, new))
        lines.append(f"{name:<48} {_num(a)} {_num(b)} {_ratio(a, b)}")
    a, b = (r["wall"] if r else None for r in (old, new))
    lines.append(f"{'total (wall)':<48} {_num(a)} {_num(b)} {_ratio(a, b)}")
    for label, r in (("old", old), ("new", new), ("pair", pair)):
        if r:
            lines.append(f"  {label}: --jobs {r['jobs']}, load average {r['load_before'][0]:.2f} before, "
                         f"{r['load_after'][0]:.2f} after; plan {r['decision']} depth {r['reusable_depth']}, "
                         f"model {r['recommended']}")  # fmt: skip
    if old and new:
        diffs = [abs(old["grid"][k] - new["grid"][k]) for k in old["grid"] if k in new["grid"]]
        same = (old["decision"], old["reusable_depth"]) == (new["decision"], new["reusable_depth"])
        lines.append(f"  grid means: largest |old - new| {max(diffs):.4f} over {len(diffs)} strategies; "
                     f"same plan: {'yes' if same else 'no'}")  # fmt: skip
    if pair and new:
        lines.append(f"  two studies side by side: {max(pair['walls']):.0f} s against {new['wall']:.0f} s alone "
                     f"(ratio {max(pair['walls']) / new['wall']:.2f})")  # fmt: skip
    return lines


PROBES = {"default": ("builtin:cnn", 28, 128), "resnet18": ("torchvision:resnet18", 64, 64)}  # S's arch, size, batch


def thread_speedup(arch: str, size: int, batch: int, steps: int = 10) -> float:
    """How much faster S's training steps run on two threads than on one (S's batch, random images)."""
    model, loss = build_model(arch, 1, 5), torch.nn.CrossEntropyLoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 1, size, size), torch.randint(0, 5, (batch,))
    seconds = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for i in range(steps + 3):  # three warm-up steps
            if i == 3:
                start = time.perf_counter()
            optimiser.zero_grad()
            loss(model(x), y).backward()
            optimiser.step()
        seconds[threads] = time.perf_counter() - start
    return seconds[1] / seconds[2]


def limits(records: dict[tuple[str, str], dict], scenario: str, speedup: float) -> list[str]:
    """The 1.6x bound replayed from the old and new cells' stages: what the new path would need to reach it."""
    old, new = records.get((scenario, "old")), records.get((scenario, "new"))
    if not (old and new):
        return []
    st = new["stages"]
    s, t_full, grid = st["S"], st["T_full"], st["transfer grid"]
    rest = new["wall"] - s - grid  # T, T_scratch, T_full, the evidence, the report: in series today
    rows = [
        ("as measured", new["wall"], old["wall"]),
        ("the rest overlapped with the grid, at best", s + grid + rest / 2, old["wall"]),
        ("the rest taking no time at all", s + grid, old["wall"]),
        ("S kept from an earlier study (the old path too)", new["wall"] - s, old["wall"] - old["stages"]["S"]),
        ("S, T_full on both cores at 2x one thread", new["wall"] - (s + t_full) * (1 - speedup / 2), old["wall"]),
        ("the grid at twice the old path's speed", new["wall"] - grid + old["stages"]["transfer grid"] / 2, old["wall"]),
    ]  # fmt: skip
    lines = [f"\n{scenario} study: what a bound would need (the rest: T, T_scratch, T_full, evidence, report);",
             f"two threads train S's steps {speedup:.2f}x faster than one, so one-thread workers on 2 cores can beat",
             f"one two-thread process by at most {2 / speedup:.2f}x",
             f"{'if':<72} {'new, s':>8} {'old/new':>8}"]  # fmt: skip
    lines += [f"{label:<72} {_num(n)} {_ratio(o, n)}" for label, n, o in rows]
    return lines


def _num(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'-':>8}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:8.2f}" if a and b else f"{'-':>8}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-speed"))
    parser.add_argument("--scenarios", default="default,resnet18", help="comma-separated: default, resnet18")
    parser.add_argument("--cells", help="comma-separated SCENARIO:VARIANT cells instead (variants old, new, pair)")
    parser.add_argument("--jobs", type=int, default=usable_cores(), help="--jobs of the new path (default: usable cores)")
    parser.add_argument("--quick", action="store_true", help="study --quick, default scenario (unless --scenarios)")
    parser.add_argument("--again", action="store_true", help="rerun cells that have a record")
    parser.add_argument("--data-dir", help="Fashion-MNIST folder (else $PARAMREUSE_DATA or the system's)")
    parser.add_argument("--arch", help="override every scenario's architecture (tests: a tiny CNN)")
    parser.add_argument("--min-steps", type=int, help="override the few-shot trainings' step floor (tests)")
    parser.add_argument("--limits", action="store_true",
                        help="also replay what the bounds would need (measures S's two-thread speedup: run it on idle cores)")
    args = parser.parse_args()
    if args.quick and args.scenarios == parser.get_default("scenarios"):
        args.scenarios = "default"
    args.out = args.out / "quick" if args.quick else args.out
    args.out.mkdir(parents=True, exist_ok=True)
    records = {}
    for scenario, variant in cells(args):
        path = args.out / f"{scenario}-{variant}.json"
        if path.is_file() and not args.again:
            print(f"{scenario}:{variant}: recorded in {path}")
        else:
            print(f"{scenario}:{variant}: running (load average {os.getloadavg()[0]:.2f})", flush=True)
            write_json(path, run_cell(scenario, variant, args))
    for path in sorted(args.out.glob("*-*.json")):
        record = json.loads(path.read_text())
        records[(record["scenario"], record["variant"])] = record
    for scenario in SCENARIOS:
        print("\n".join(table(records, scenario)))
        if args.limits and (scenario, "old") in records and (scenario, "new") in records:
            print("\n".join(limits(records, scenario, thread_speedup(*PROBES[scenario]))))


if __name__ == "__main__":
    main()
