"""The frozen prefix decided on the chosen score: the reuse plan before and after, draw by draw.

*Before* is the reuse plan with the frozen-prefix curve read in 0/1 and the network decision off:
run again on today's code for the calibration pairs (``runs/r5p0``: their round-5 runs came from
older code), round 5's own run for the evaluation pairs (``bench/results/r5``); *after* is the same
draws (pairs, seeds, shots) run again with the curve read in the true-class probability:

    OMP_NUM_THREADS=1 .venv/bin/python bench/plan.py --out runs/r5p --pairs C1,... --strategies plan \\
        --thresholds $'scratch_on = "never"\\nsweep_score = "true-prob"'      # each pair's S copied from runs/r5
    .venv/bin/python bench/prefix.py                 # calibration: the rule; evaluation: before and after
    .venv/bin/python bench/prefix.py --keep          # copy the runs into bench/results/r5p and r5p0

A draw whose frozen depth is the same both ways trains the same model, so its test metric must
be equal; the script says how many are, and any that are not. The protocol (the rule, the pairs)
was fixed in bench/README.md before any run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import BASELINES, PAIRS
from scores import CHOSEN, EVALUATION, _over, draws, keep_copy, kept, read_kept

from paramreuse.transfer.grid import TRANSFER_FILE

KEPT = Path(__file__).resolve().parent / "results" / "r5p"
KEPT_AGAIN = Path(__file__).resolve().parent / "results" / "r5p0"
SAME = 1e-9  # equal depths must give equal test metrics (same seed, same training)


def run_doc(out: Path, key: str, kept_in: Path) -> dict | None:
    """A pair's transfer.json: the run folder's, else the copy kept in the repository (``--keep``)."""
    return read_kept(out / key / "transfer" / TRANSFER_FILE, kept_in / f"{key}.json.gz")


def paired(round5: dict, before: dict, after: dict, n: int) -> list[dict]:
    """Per seed: the reuse plan's test metric and frozen depth before and after, and round 5's draw (scratch, the
    baselines, the network evidence) with after's plan in the ``draw_after``."""
    b, a = before["strategies"]["plan"]["by_shots"][str(n)], after["strategies"]["plan"]["by_shots"][str(n)]
    ds = draws(round5, n)
    return [{"before": b["runs"][s], "after": a["runs"][s], "depths": (b["depths"][s], a["depths"][s]),
             "draw": ds[s], "draw_after": dataclasses.replace(ds[s], plan=a["runs"][s])}
            for s in range(min(len(b["runs"]), len(a["runs"])))]  # fmt: skip


def collect(out: Path, again: Path) -> dict[tuple[str, int], list[dict]]:
    """Before and after per (pair, shots). *Before* is the 0/1 plan run again on the after-runs' S where
    training S again gave other tensors (``again``), else round 5's own run."""
    found = {}
    for key in PAIRS:
        round5, after = kept(Path("runs/r5"), key), run_doc(out, key, KEPT)
        if round5 is None or after is None:
            continue
        before = run_doc(again, key, KEPT_AGAIN) or round5
        for n in after["strategies"]["plan"]["by_shots"]:
            found[(key, int(n))] = paired(round5, before, after, int(n))
    return found


def check_same(found: dict) -> None:
    same = [(k, r) for k, rows in found.items() for r in rows if r["depths"][0] == r["depths"][1]]
    off = [(k, r) for k, r in same if abs(r["before"] - r["after"]) > SAME]
    moved = sum(len(rows) for rows in found.values()) - len(same)
    print(f"- draws: {sum(len(rows) for rows in found.values())}; frozen depth changed on {moved}; "
          f"same depth and a different test metric on {len(off)}" + (":" if off else ""))  # fmt: skip
    for (key, n), r in off[:10]:
        print(f"  - {key} {n} shots: {r['before']:.4f} -> {r['after']:.4f} at depth {r['depths'][0]}")


def calibration(found: dict) -> None:
    by_pair: dict[str, list[float]] = {}
    print("| pair | shots | before | after | after - before, pts | depths before -> after |")
    print("|---|---|---|---|---|---|")
    for (key, n), rows in sorted(found.items()):
        if PAIRS[key].split == EVALUATION:
            continue
        diffs = [r["after"] - r["before"] for r in rows]
        by_pair.setdefault(key, []).extend(diffs)
        depths = " ".join(f"{a}->{b}" if a != b else str(a) for a, b in (r["depths"] for r in rows))
        print(f"| {key} | {n} | {statistics.fmean(r['before'] for r in rows):.3f} | "
              f"{statistics.fmean(r['after'] for r in rows):.3f} | {statistics.fmean(diffs) * 100:+.2f} | {depths} |")
    if not by_pair:
        return
    means = [statistics.fmean(v) for v in by_pair.values()]
    print(f"\n- calibration, after - before, mean over {len(means)} pairs: {statistics.fmean(means) * 100:+.2f} pts "
          f"{_over(means)} (the prefix moves to the true-class probability only if the interval excludes 0, above)")


def evaluation(found: dict) -> None:
    rows = {k: v for k, v in found.items() if PAIRS[k[0]].split == EVALUATION}
    if not rows:
        return
    print("\n| pair | shots | best reuse default | reuse plan - best default, before / after, pts | "
          "reuse plan - finetune-all, before / after, pts | depths before -> after |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    gaps, ft, regrets = {"before": [], "after": []}, {"before": [], "after": []}, {"before": [], "after": []}
    for (key, n), rs in sorted(rows.items()):
        means = {b: statistics.fmean(r["draw"].baselines[b] for r in rs) for b in BASELINES}
        best = max(BASELINES, key=means.get)
        for when in ("before", "after"):
            plan = statistics.fmean(r[when] for r in rs)
            gaps[when].append(plan - means[best])
            ft[when].append(plan - means["finetune-all"])
            top = max(statistics.fmean(r["draw"].scratch for r in rs), plan)
            draw = "draw" if when == "before" else "draw_after"
            regrets[when].append(top - statistics.fmean(r[draw].decided(CHOSEN) for r in rs))
        depths = " ".join(f"{a}->{b}" if a != b else str(a) for a, b in (r["depths"] for r in rs))
        print(f"| {key} | {n} | {best} {means[best]:.3f} | {gaps['before'][-1] * 100:+.1f} / "
              f"{gaps['after'][-1] * 100:+.1f} | {ft['before'][-1] * 100:+.1f} / {ft['after'][-1] * 100:+.1f} | "
              f"{depths} |")  # fmt: skip
    for n in sorted({m for _, m in rows}):
        pick = [i for i, (_, m) in enumerate(sorted(rows)) if m == n]
        line = []
        for when in ("before", "after"):
            g = [gaps[when][i] for i in pick]
            line.append(f"{when}: gap to the best reuse default {statistics.fmean(g) * 100:+.2f} pts {_over(g)}, "
                        f"worst against finetune-all {min(ft[when][i] for i in pick) * 100:+.1f}, decision regret "
                        f"(chosen network rule) {statistics.fmean(regrets[when][i] for i in pick) * 100:+.2f}")  # fmt: skip
        print(f"- {n} shots, {len(pick)} pairs; " + "; ".join(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/r5p"))
    parser.add_argument("--again", type=Path, default=Path("runs/r5p0"),
                        help="the 0/1 plan run again where S came out different (before, for those pairs)")
    parser.add_argument("--keep", action="store_true", help="copy finished runs into bench/results/r5p and r5p0")
    args = parser.parse_args()
    if args.keep:
        for out, kept_in in ((args.out, KEPT), (args.again, KEPT_AGAIN)):
            for key in PAIRS:
                path = out / key / "transfer" / TRANSFER_FILE
                if path.is_file():
                    keep_copy(path, kept_in / f"{key}.json.gz")
        return
    found = collect(args.out, args.again)
    check_same(found)
    print()
    calibration(found)
    evaluation(found)


if __name__ == "__main__":
    main()
