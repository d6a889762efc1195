"""The paper's two conditions at the paper's budget: J1 and J3 measured on a carved validation set.

The paper says S's parameters can be reused where J1 (S's conv kernels put into T cost little
accuracy) and J3 (S's kernels lie close to those of a network trained on the target alone) both
hold. Round 4 measured them on the held-out shots, where J1 is noisy (bench/README.md, "The
paper's claim as a prediction"). Here each draw also carves the validation set of
``--budget validation-set`` (10% of each class, up to 500 images):

- T: S fine-tuned on all the shots, T_scratch: a fresh network trained on them (the transfer
  grid's finetune-all and scratch trainings);
- J1: all of S's conv kernels in T, the better of the BN-kept and BN-recalibrated variants, the
  metric's drop on the validation set; reusable when within the network tolerance;
- J3: S against T_scratch, aligned; the median unit's position between T_scratch's own values
  (0) and the random null (1); small when at most 0.5.

Each is set against the gain of reuse on that pair and shot count: the round-5 reuse plan minus
scratch (``bench/results/r5``). The protocol was fixed in bench/README.md before any run.

    OMP_NUM_THREADS=1 .venv/bin/python bench/claim.py --pairs C1,C2,...   # measure (resumes per pair)
    .venv/bin/python bench/claim.py --report                                  # the table
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import PAIRS  # the pairs, with their split
from scores import (  # the round-5 runs (run folder, else the copy in bench/results/r5)
    EVALUATION,
    keep_copy,
    kept,
    read_kept,
)

from paramreuse.data import load_task
from paramreuse.judge.crossfit import j3_positions, source_for
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.judge.verdicts import Thresholds
from paramreuse.models import read_state_dict
from paramreuse.results import write_json
from paramreuse.stats import paired_test
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.runs import fit, prepare

KEPT = Path(__file__).resolve().parent / "results" / "claim"  # one JSON per finished pair (--keep)
J3_SMALL = 0.5


def measure_draw(source: Source, pair, n: int, seed: int, device) -> dict:
    """J1 on the validation set (T = S fine-tuned on the shots) and J3 (S against T_scratch) for one draw."""
    task = load_task(pair.target, pair.target_classes, shots=n, seed=seed, size=pair.size,
                     test_per_class=pair.test_per_class)  # fmt: skip
    config = TransferConfig(test_per_class=pair.test_per_class)
    trained = {}
    for name in ("finetune-all", "scratch"):
        p = prepare(source, task, name, plan=None, seed=seed, config=config)
        fit(p, task.train, task, seed, device)
        trained[name] = p.model.eval()
    s_model = source_for(source.arch, source.state, task, seed).eval()
    j1_config = SweepConfig(params=(), cumulative_rows=False, network_rows=True, adaptive=False, bootstrap=200)
    sweep = replacement_sweep(s_model, trained["finetune-all"], task.val, task.train, j1_config, task=task.kind,
                              device=device)  # fmt: skip
    positions = j3_positions(s_model, trained["scratch"], task.val.x[:2])
    tolerance = Thresholds().for_task(task.kind).network_tolerance
    return {"seed": seed, "shots": n, "validation_images": len(task.val), "tolerance": tolerance,
            "j1_drop": min(r.drop for r in sweep.rows), "j1_rows": {r.params: r.drop for r in sweep.rows},
            "j3_median": statistics.median(positions), "baseline": sweep.baseline}  # fmt: skip


def measure_pair(key: str, out: Path, shots: tuple[int, ...], seeds: int, device, sources: Path) -> dict:
    path = out / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    pair = PAIRS[key]
    start = time.perf_counter()
    # S as round 5 trained it, read as it is: training it again need not give the same tensors
    source = Source(pair.arch, read_state_dict(sources / key / "source" / "model.safetensors"))
    draws = [measure_draw(source, pair, n, s, device) for n in shots for s in range(seeds)]
    result = {"pair": key, "draws": draws, "seconds": time.perf_counter() - start}
    write_json(path, result)
    print(f"{key}: {len(draws)} draws in {result['seconds']:.0f} s", flush=True)
    return result


def finished(out: Path, key: str) -> dict | None:
    return read_kept(out / f"{key}.json", KEPT / f"{key}.json.gz")


def report(out: Path) -> None:
    print("| pair | shots | gain of reuse, pts (p) | J1 reusable | J1 drop, median | J3 small | J3 position, median | "
          "J1 and J3 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    cells = []
    for key, pair in PAIRS.items():
        doc, measured = kept(Path("runs/r5"), key), finished(out, key)
        if pair.split == EVALUATION or doc is None or measured is None:
            continue
        for n in sorted({d["shots"] for d in measured["draws"]}):
            by = doc["strategies"]
            plan, scratch = by["plan"]["by_shots"][str(n)]["runs"], by["scratch"]["by_shots"][str(n)]["runs"]
            gain, p = statistics.fmean(plan) - statistics.fmean(scratch), paired_test(plan, scratch)["p"]
            ds = [d for d in measured["draws"] if d["shots"] == n]
            j1 = [d["j1_drop"] <= d["tolerance"] for d in ds]
            j3 = [d["j3_median"] <= J3_SMALL for d in ds]
            both = sum(a and b for a, b in zip(j1, j3))
            drop, position = statistics.median(d["j1_drop"] for d in ds), statistics.median(d["j3_median"] for d in ds)
            cells.append({"gain": gain, "p": p, "both": both, "draws": len(ds), "drop": drop, "position": position})
            shown = "–" if p is None else f"{p:.2g}"
            print(f"| {key} | {n} | {gain * 100:+.1f} ({shown}) | {sum(j1)}/{len(ds)} | {drop * 100:+.1f} pts | "
                  f"{sum(j3)}/{len(ds)} | {position:.2f} | {both}/{len(ds)} |")  # fmt: skip
    if not cells:
        return
    clear = [c for c in cells if c["p"] is not None and c["p"] < 0.05]
    right = sum((c["both"] * 2 > c["draws"]) == (c["gain"] > 0) for c in clear)
    print(f"\n- J1 and J3 (majority of draws) predict the clear winner on {right} of {len(clear)} clear cells "
          f"(paired p < 0.05); always reuse on {sum(c['gain'] > 0 for c in clear)}")  # fmt: skip
    for label, field in (("J1's drop", "drop"), ("J3's position", "position")):
        rho, p = stats.spearmanr([-c[field] for c in cells], [c["gain"] for c in cells])
        print(f"- Spearman correlation of the gain with minus {label}, over {len(cells)} cells: "
              f"{rho:+.2f} (p {p:.2g})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    calibration = ",".join(k for k, p in PAIRS.items() if p.split != EVALUATION)
    parser.add_argument("--pairs", default=calibration)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--shots", default="5,10")
    parser.add_argument("--out", type=Path, default=Path("runs/claim"))
    parser.add_argument("--sources", type=Path, default=Path("runs/r5"), help="where each pair's S was trained")
    parser.add_argument("--report", action="store_true", help="only print the table of finished pairs")
    parser.add_argument("--keep", action="store_true", help="copy finished pairs into bench/results/claim")
    args = parser.parse_args()
    if args.keep:
        for path in sorted(args.out.glob("*.json")):
            keep_copy(path, KEPT / f"{path.name}.gz")
        return
    if not args.report:
        args.out.mkdir(parents=True, exist_ok=True)
        shots = tuple(int(n) for n in args.shots.split(","))
        for key in args.pairs.split(","):
            measure_pair(key, args.out, shots, args.seeds, torch.device("cpu"), args.sources)
    report(args.out)


if __name__ == "__main__":
    main()
