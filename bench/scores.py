"""Sharper evidence: every candidate score, design and rule of the network decision, replayed per draw.

Reads the transfer runs that ``bench/plan.py`` wrote with the decision switched off and the
outputs kept (``--strategies scratch,plan --thresholds 'scratch_on = "never"'``): every draw has
scratch's and the reuse plan's test metric and each arm's held-out outputs for the 2-fold design
(the plan's own evidence) and the 3-fold design (the diagnostics). Any candidate (score, design,
rule) then decides per draw, and the plan it gives is known without training again: scratch's run
where it says scratch, the reuse plan's run elsewhere.

    .venv/bin/python bench/scores.py --out runs/r5 --calibrate   # every candidate on the calibration pairs
    .venv/bin/python bench/scores.py --out runs/r5               # the chosen candidate on the round 5 pairs

The candidates and the way one is chosen were fixed in bench/README.md ("Sharper evidence") before
any result was looked at.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import BASELINES, PAIRS  # the pairs, with their split; the practitioner's reuse baselines

from paramreuse.judge.evidence import SCORE_BOUNDS, paired_scores
from paramreuse.judge.network import says_scratch
from paramreuse.results import read_json
from paramreuse.stats import difference_bounds, mean_ci, paired_test, seed_interval
from paramreuse.transfer.grid import TRANSFER_FILE

DESIGNS = ("folds2", "folds3", "pooled", "slope")
MARGINS = (0.0, 0.02, 0.05, 0.1)
LOG_LOSS_MARGINS = (0.0, 0.05, 0.1, 0.2)  # nats: a log-loss moves further than a bounded score
Z = (0.5, 1.0, 2.0)
# One score for both tasks, added after the 22-pair replay showed each alone (still calibration only):
# temperature-scaled log-loss for classes, soft Dice for masks; its margin i is LOG_LOSS_MARGINS[i] on classes.
BOTH = "log-loss-ts|soft-dice"
TODAY = ("correct", "folds2", "mean", 0.05)  # the rule of issue 20 (0/1 scores, mean below -0.05)
CHOSEN = ("true-prob", "folds2", "z", 0.5)  # --calibrate on the 23 calibration pairs, 2026-12-06 (bench/README.md)
EVALUATION = "evaluation (round 5)"
KEPT = Path(__file__).resolve().parent / "results" / "r5"  # finished pairs' transfer.json, gzipped (--keep)


@dataclass(frozen=True)
class Draw:
    """One (pair, shots, seed) draw: scratch's and the reuse plan's test metric, and the kept outputs."""

    scratch: float
    plan: float
    outputs: dict  # design -> {"folds": [...]}
    task: str  # classification or segmentation
    baselines: dict = field(default_factory=dict)  # the reuse baselines run on this draw: name -> test metric

    def differences(self, score: str, design: str) -> np.ndarray | None:
        """Per-image differences (reuse minus fresh) in ``score`` under ``design``; None where not kept."""
        if design in ("folds2", "folds3"):
            return _diffs(self.outputs.get(design), score)
        d2, d3 = _diffs(self.outputs.get("folds2"), score), _diffs(self.outputs.get("folds3"), score)
        if d2 is None or d3 is None:
            return None
        by_image = np.empty_like(d3)
        by_image[_index(self.outputs["folds3"])] = d3
        d3 = by_image[_index(self.outputs["folds2"])]  # the same images in the same order as folds2
        return (d2 + d3) / 2 if design == "pooled" else 3 * d3 - 2 * d2

    def says_scratch(self, candidate: tuple) -> bool | None:
        score, design, rule, margin = candidate
        if score == BOTH:
            score = "soft-dice" if self.task == "segmentation" else "log-loss-ts"
            if score == "log-loss-ts" and rule == "mean":
                margin = LOG_LOSS_MARGINS[MARGINS.index(margin)]
        diffs = self.differences(score, design)
        if diffs is None:
            return None
        mean = float(diffs.mean())
        se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0
        # the tool's own rule: "z" is its "se" (the mean below -margin standard errors); neither reads the CI
        return says_scratch(mean, (mean, mean), scratch_on="mean" if rule == "mean" else "se", scratch_margin=margin,
                            se=se)  # fmt: skip

    def decided(self, candidate: tuple) -> float | None:
        scratch = self.says_scratch(candidate)
        return None if scratch is None else (self.scratch if scratch else self.plan)


def _diffs(record: dict | None, score: str) -> np.ndarray | None:
    if record is None:
        return None
    try:
        reuse, fresh = paired_scores(record, score)
    except ValueError:  # a score this task does not keep (log-loss-ts for segmentation, soft-dice for classes)
        return None
    return reuse - fresh


def _index(record: dict) -> np.ndarray:
    """Each held-out image's position among the shots, fold after fold (as the differences are ordered)."""
    return np.concatenate([np.asarray(fold["index"]) for fold in record["folds"]])


def draws(doc: dict, n: int) -> list[Draw]:
    by = {name: entry["by_shots"][str(n)] for name, entry in doc["strategies"].items()}
    plan = by["plan"]
    task = "segmentation" if doc.get("metric") == "dice" else "classification"
    out = []
    for s in range(doc["seeds"]):
        outputs = {"folds2": plan["network_outputs"][s]}
        designs = (plan.get("diagnostics") or [{}] * doc["seeds"])[s].get("designs", {})
        if "folds3" in designs:
            outputs["folds3"] = designs["folds3"]["outputs"]
        baselines = {b: by[b]["runs"][s] for b in BASELINES if b in by}
        out.append(Draw(by["scratch"]["runs"][s], plan["runs"][s], outputs, task, baselines))
    return out


def candidates() -> list[tuple]:
    out = []
    for score in ("correct", "brier", "true-prob", "log-loss-ts", "soft-dice", BOTH):
        for design in DESIGNS:
            margins = LOG_LOSS_MARGINS if score == "log-loss-ts" else MARGINS  # BOTH: MARGINS, converted per task
            out += [(score, design, "mean", m) for m in margins] + [(score, design, "z", z) for z in Z]
    return out


def name(candidate: tuple) -> str:
    score, design, rule, margin = candidate
    below = f"-{margin:g}" if margin else "0"
    return f"{score}, {design}, " + (f"mean < {below}" if rule == "mean" else f"mean < -{margin:g} SE")


def read_kept(path: Path, copy: Path) -> dict | None:
    """A finished result: ``path`` when the run folder has it, else its gzipped ``copy`` in the repository."""
    if path.is_file():
        return read_json(path)
    return json.loads(gzip.decompress(copy.read_bytes())) if copy.is_file() else None


def keep_copy(path: Path, copy: Path) -> None:
    """Gzip ``path`` into the repository at ``copy`` (no time stamp, so an unchanged result stays unchanged)."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(gzip.compress(path.read_bytes(), mtime=0))


def kept(out: Path, key: str) -> dict | None:
    """A finished pair's transfer.json: the run folder's, else the copy kept in the repository (``--keep``)."""
    return read_kept(out / key / "transfer" / TRANSFER_FILE, KEPT / f"{key}.json.gz")


def keep(out: Path) -> list[str]:
    """Copy every finished pair's transfer.json into the repository (gzip), so replays outlive the machine."""
    KEPT.mkdir(parents=True, exist_ok=True)
    done = []
    for key in PAIRS:
        path = out / key / "transfer" / TRANSFER_FILE
        if path.is_file():
            keep_copy(path, KEPT / f"{key}.json.gz")
            done.append(key)
    return done


def pairs(out: Path, evaluation: bool) -> dict[tuple[str, int], list[Draw]]:
    """The finished pairs of one split, by (key, shots)."""
    found = {}
    for key, pair in PAIRS.items():
        doc = kept(out, key) if (pair.split == EVALUATION) == evaluation else None
        if doc is None:
            continue
        for n, entry in doc["strategies"]["plan"]["by_shots"].items():
            if "network_outputs" in entry:
                found[(key, int(n))] = draws(doc, int(n))
    return found


def regret(ds: list[Draw], candidate: tuple) -> float | None:
    """The better of the means of scratch and the reuse plan, minus the decided plan's mean."""
    decided = [d.decided(candidate) for d in ds]
    if any(v is None for v in decided):
        return None
    best = max(statistics.fmean(d.scratch for d in ds), statistics.fmean(d.plan for d in ds))
    return best - statistics.fmean(decided)


def calibrate(found: dict, every: bool = False) -> None:
    """Every candidate's mean decision regret per shot count over the pairs that have it (``every``: all rules,
    else each (score, design)'s best rule)."""
    shots = sorted({n for _, n in found})
    rows = []
    for c in candidates():
        cells = []
        for n in shots:
            regrets = [r for (k, m), ds in found.items() if m == n for r in [regret(ds, c)] if r is not None]
            cells.append((statistics.fmean(regrets), len(regrets)) if regrets else None)
        if all(cells):
            rows.append((statistics.fmean(v for v, _ in cells), c, cells))
    rows.sort(key=lambda r: (round(r[0], 6), DESIGNS.index(r[1][1]), r[1][0] != "correct", r[1][3]))
    if not every:  # the best rule of each (score, design), and today's
        firsts = {}
        for r in rows:
            firsts.setdefault(r[1][:2], r)
        rows = [r for r in rows if r in firsts.values() or r[1] == TODAY]
    print("| candidate | " + " | ".join(f"{n} shots, pts (pairs)" for n in shots) + " | mean, pts |")
    print("|---|" + "---|" * (len(shots) + 1))
    for mean, c, cells in rows:
        mark = " (today)" if c == TODAY else ""
        print(f"| {name(c)}{mark} | " + " | ".join(f"{v * 100:+.2f} ({k})" for v, k in cells) + f" | {mean * 100:+.2f} |")
    most = max(sum(k for _, k in r[2]) for r in rows)  # a one-task score covers fewer pairs: not comparable
    cheap = [r for r in rows if r[1][1] == "folds2" and sum(k for _, k in r[2]) == most]
    if cheap:
        print(f"\n- lowest among the designs at today's cost (folds2), on every pair: {name(cheap[0][1])}, "
              f"{cheap[0][0] * 100:+.2f} pts")


def widths(found: dict, score: str, design: str = "folds2") -> list[float]:
    """The 95% bootstrap CI width of the mean difference per draw, in the score's units."""
    out = []
    for ds in found.values():
        for d in ds:
            diffs = d.differences(score, design)
            if diffs is not None:
                lo, hi = mean_ci(diffs, 1000, 0, difference_bounds(SCORE_BOUNDS[score]))
                out.append(hi - lo)
    return out


def evaluate(found: dict, chosen: tuple) -> None:
    """The chosen candidate beside today's rule on the same draws, per pair and shot count."""
    for n in sorted({m for _, m in found}):
        print(f"\n#### {n} shots\n")
        print("| pair | scratch | reuse plan | today's rule | chosen | decision regret today / chosen, pts | "
              "decisions (reuse/scratch) | p, winner | draws agreeing |")  # fmt: skip
        print("|---|" + "---|" * 8)
        today, ours, right, clear, agree, total, own = [], [], 0, 0, 0, 0, 0
        for (key, m), ds in sorted(found.items()):
            if m != n:
                continue
            scratch = statistics.fmean(d.scratch for d in ds)
            plan = statistics.fmean(d.plan for d in ds)
            r_today, r_ours = regret(ds, TODAY), regret(ds, chosen)
            today.append(r_today)
            ours.append(r_ours)
            decisions = ["scratch" if d.says_scratch(chosen) else "reuse" for d in ds]
            test = paired_test([d.plan for d in ds], [d.scratch for d in ds])
            winner = None
            if test["p"] is not None and test["p"] < 0.05:
                winner = "reuse" if plan > scratch else "scratch"
                clear += 1
                right += max(set(decisions), key=decisions.count) == winner
                agree += sum(x == winner for x in decisions)
                total += len(ds)
            mine = sum(x == ("reuse" if d.plan >= d.scratch else "scratch") for x, d in zip(decisions, ds))
            own += mine
            p = "–" if test["p"] is None else f"{test['p']:.2g}"
            print(f"| {key} | {scratch:.3f} | {plan:.3f} | {statistics.fmean(d.decided(TODAY) for d in ds):.3f} | "
                  f"{statistics.fmean(d.decided(chosen) for d in ds):.3f} | {r_today * 100:+.1f} / {r_ours * 100:+.1f} | "
                  f"{decisions.count('reuse')}/{decisions.count('scratch')} | {p}, {winner or 'no clear winner'} | "
                  f"{mine} of {len(ds)} |")  # fmt: skip
        print(f"\n- decision regret, mean over pairs: today {statistics.fmean(today) * 100:+.2f} pts {_over(today)}, chosen "
              f"{statistics.fmean(ours) * 100:+.2f} pts {_over(ours)} (max {max(ours) * 100:+.2f}); bound: at most half of "
              f"today's or 0.3 pts: {'holds' if statistics.fmean(ours) <= max(statistics.fmean(today) / 2, 0.003) else 'does not hold'}")  # fmt: skip
        print(f"- pairs where scratch and the reuse plan differ with p < 0.05: {clear}; the majority decision is the "
              f"winner on {right}; per-draw agreement with the winner {agree} of {total}")  # fmt: skip
        print(f"- single draws whose decision agreed with their own better of scratch and the reuse plan: {own} of "
              f"{sum(len(ds) for (_, m), ds in found.items() if m == n)} (the first box's track record)")  # fmt: skip
        against_baselines({k: ds for (k, m), ds in found.items() if m == n}, chosen)


def _over(values: list[float]) -> str:
    """The 95% t-interval over pairs, in points."""
    spread = seed_interval(values)
    return f"[{spread['ci'][0] * 100:+.2f}, {spread['ci'][1] * 100:+.2f}]" if spread["ci"] else "(too few pairs)"


def against_baselines(found: dict[str, list[Draw]], chosen: tuple) -> None:
    """Total regret (the better of scratch and the best reuse baseline, minus the decided plan) and the reuse
    plan's gaps to the best reuse baseline and to fine-tune-all, per pair; pairs without the baselines are left out."""
    rows = {k: ds for k, ds in found.items() if all(b in ds[0].baselines for b in BASELINES)}
    if not rows:
        return
    print("\n| pair | best reuse baseline | total regret today / chosen, pts | reuse plan - best baseline, pts | "
          "reuse plan - finetune-all, pts |")  # fmt: skip
    print("|---|---|---|---|---|")
    totals, gaps, ft = {TODAY: [], chosen: []}, [], []
    for key, ds in sorted(rows.items()):
        means = {b: statistics.fmean(d.baselines[b] for d in ds) for b in BASELINES}
        best = max(BASELINES, key=means.get)
        plan = statistics.fmean(d.plan for d in ds)
        top = max(statistics.fmean(d.scratch for d in ds), means[best])
        for c, regrets in totals.items():
            regrets.append(top - statistics.fmean(d.decided(c) for d in ds))
        gaps.append(plan - means[best])
        ft.append(plan - means["finetune-all"])
        print(f"| {key} | {best} {means[best]:.3f} | {totals[TODAY][-1] * 100:+.1f} / "
              f"{totals[chosen][-1] * 100:+.1f} | {gaps[-1] * 100:+.1f} | {ft[-1] * 100:+.1f} |")  # fmt: skip
    print(f"\n- total regret, mean over {len(rows)} pairs: today {statistics.fmean(totals[TODAY]) * 100:+.2f} pts "
          f"{_over(totals[TODAY])}, chosen {statistics.fmean(totals[chosen]) * 100:+.2f} pts {_over(totals[chosen])} "
          "(goal at most 1.0)")  # fmt: skip
    print(f"- reuse plan - best reuse baseline, mean {statistics.fmean(gaps) * 100:+.2f} pts (goal within 0.5); "
          f"reuse plan - finetune-all, worst pair {min(ft) * 100:+.2f} pts (goal never below -1)")  # fmt: skip


# The lowest candidate of each costlier design on the calibration pairs (bench/README.md): what would reach the
# bound at a higher cost. Replayed on the evaluation pairs by --limits beside the chosen one, never chosen from there.
COSTLIER = (("log-loss-ts|soft-dice", "folds3", "mean", 0.0), ("true-prob", "pooled", "mean", 0.0),
            ("log-loss-ts", "slope", "mean", 0.0))  # fmt: skip
COST = {"folds2": "1x", "folds3": "2x", "pooled": "3x", "slope": "3x"}  # the evidence's trainings against today's


def limits(found: dict) -> None:
    """Decision regret of today's rule, the chosen one, the costlier designs' best and a perfect per-draw decision
    (each draw's better of scratch and the reuse plan, known only in hindsight), per shot count."""
    shots = sorted({m for _, m in found})
    print("| decision | evidence cost | " + " | ".join(f"{n} shots, pts (pairs)" for n in shots) + " |")
    print("|---|---|" + "---|" * len(shots))
    for label, c in [("", TODAY), ("", CHOSEN), *(("", c) for c in COSTLIER), ("perfect per draw", None)]:
        cells = []
        for n in shots:
            regrets = []
            for (_, m), ds in found.items():
                if m != n:
                    continue
                best = max(statistics.fmean(d.scratch for d in ds), statistics.fmean(d.plan for d in ds))
                r = best - statistics.fmean(max(d.scratch, d.plan) for d in ds) if c is None else regret(ds, c)
                if r is not None:
                    regrets.append(r)
            cells.append(f"{statistics.fmean(regrets) * 100:+.2f} ({len(regrets)})" if regrets else "–")
        cost = "hindsight" if c is None else COST[c[1]]
        mark = " (chosen)" if c == CHOSEN else " (today)" if c == TODAY else ""
        print(f"| {label if c is None else name(c)}{mark} | {cost} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/r5"))
    parser.add_argument("--calibrate", action="store_true", help="every candidate on the calibration pairs")
    parser.add_argument("--all", action="store_true", help="with --calibrate: every rule, not each design's best")
    parser.add_argument("--keep", action="store_true", help="copy finished pairs' transfer.json into bench/results/r5")
    parser.add_argument("--limits", action="store_true", help="the evaluation pairs' regret beside costlier designs and "
                        "a perfect decision")  # fmt: skip
    args = parser.parse_args()
    if args.keep:
        print(f"kept in {KEPT}: {', '.join(keep(args.out)) or 'nothing finished'}")
        return
    found = pairs(args.out, evaluation=not args.calibrate)
    if not found:
        print(f"no finished pairs with kept outputs under {args.out}")
        return
    if args.calibrate:
        print(f"### Calibration: {len(found)} (pair, shots) cells, mean decision regret of every candidate\n")
        calibrate(found, every=args.all)
        evaluate(found, CHOSEN)
        for score in ("correct", "brier", "true-prob"):
            w = widths(found, score)
            if w:
                print(f"- {score}: 95% CI of the mean difference, median width over {len(w)} draws "
                      f"{statistics.median(w):.3f} (range {min(w):.3f}-{max(w):.3f})")  # fmt: skip
        return
    if args.limits:
        limits(found)
        return
    evaluate(found, CHOSEN)


if __name__ == "__main__":
    main()
