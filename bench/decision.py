"""Reuse or start fresh: the network decision on benchmark pairs, and the paper's claim as a prediction.

Reads the transfer runs that ``bench/plan.py`` wrote with the decision switched off
(``--thresholds 'scratch_on = "never"'``): every draw then trains the plan that reuses S and
records the network decision's evidence (S-initialised minus fresh, cross-fitted on the
shots), the paper's J1 and J3 (``TransferConfig.diagnose``), and scratch trains beside it. A
plan that decides "scratch" trains exactly as the scratch strategy does (same initialisation,
steps and test metric; tests/test_crossfit.py), so the plan under any network rule is known
per draw: the scratch run where the rule says scratch, the reuse plan's run elsewhere.

    .venv/bin/python bench/decision.py --out runs/r3 --calibrate   # choose the rule on calibration pairs only
    .venv/bin/python bench/decision.py --out runs/r3               # the chosen rule on the evaluation pairs

The rule is chosen on the calibration pairs (every pair before round 3) and then frozen in
:data:`CHOSEN`; the evaluation pairs (round 3, V1-V8) are reported on their own.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan import PAIRS  # the pairs, with their split

from paramreuse.judge.network import says_scratch
from paramreuse.results import read_json
from paramreuse.stats import paired_test, seed_interval
from paramreuse.transfer.grid import TRANSFER_FILE

BASELINES = ("finetune-all", "lp-ft", "l2-sp", "auto-rgn")  # the practitioner's reuse baselines (non-oracle)
RULES = (("mean", 0.0), ("mean", 0.02), ("mean", 0.05), ("mean", 0.1), ("ci", 0.0))  # candidates, fixed before the evaluation pairs were looked at
# The rule each round chose by --calibrate on its calibration pairs: the lowest mean regret over both shot
# counts (bench/README.md, "Reuse or start fresh"). Round 3 (calibration: C1-N4) kept S always (1.96 points,
# the others 2.3-2.6); round 4 (calibration: every earlier pair, V1-V8 included) chose mean, margin 0.05
# (2.39 points; mean 0: 2.67, 0.02: 2.53, 0.1: 2.96, ci: 2.82, never: 5.85).
CHOSEN = {3: ("never", 0.0), 4: ("mean", 0.05)}
ROUNDS = (3, 4)


def in_split(split: str, rnd: int, evaluation: bool) -> bool:
    """Whether a pair of ``split`` is an evaluation pair of round ``rnd`` (or, with not ``evaluation``,
    one of its calibration pairs: every pair fixed before that round)."""
    if evaluation:
        return split == f"evaluation (round {rnd})"
    return not any(split == f"evaluation (round {later})" for later in ROUNDS if later >= rnd)
# Round 2's means on N1-N4 (bench/README.md, "Round 2"): the same draws, seeds and code for every strategy but
# the plan, so round 3 reruns only scratch and the plan there (its scratch must equal round 2's: checked).
ROUND2 = {
    ("N1", 5): {"scratch": 0.836, "finetune-all": 0.701, "lp-ft": 0.697, "l2-sp": 0.691, "auto-rgn": 0.592, "best-depth": 0.708},
    ("N2", 5): {"scratch": 0.533, "finetune-all": 0.555, "lp-ft": 0.535, "l2-sp": 0.553, "auto-rgn": 0.527, "best-depth": 0.553},
    ("N3", 5): {"scratch": 0.359, "finetune-all": 0.447, "lp-ft": 0.510, "l2-sp": 0.444, "auto-rgn": 0.378, "best-depth": 0.468},
    ("N4", 5): {"scratch": 0.576, "finetune-all": 0.611, "lp-ft": 0.609, "l2-sp": 0.612, "auto-rgn": 0.605, "best-depth": 0.615},
    ("N1", 10): {"scratch": 0.919, "finetune-all": 0.795, "lp-ft": 0.817, "l2-sp": 0.791, "auto-rgn": 0.673, "best-depth": 0.787},
    ("N2", 10): {"scratch": 0.571, "finetune-all": 0.589, "lp-ft": 0.594, "l2-sp": 0.590, "auto-rgn": 0.576, "best-depth": 0.577},
    ("N3", 10): {"scratch": 0.307, "finetune-all": 0.479, "lp-ft": 0.558, "l2-sp": 0.475, "auto-rgn": 0.395, "best-depth": 0.478},
    ("N4", 10): {"scratch": 0.654, "finetune-all": 0.655, "lp-ft": 0.658, "l2-sp": 0.651, "auto-rgn": 0.628, "best-depth": 0.653},
}  # fmt: skip


@dataclass(frozen=True)
class Draw:
    """One (pair, shots, seed) draw: the values of the strategies and the plan's evidence."""

    values: dict[str, float]
    network: dict
    diagnostics: dict | None

    def says_scratch(self, rule: tuple[str, float]) -> bool:
        on, margin = rule
        return says_scratch(self.network["difference"], self.network["ci"], scratch_on=on, scratch_margin=margin)

    def plan(self, rule: tuple[str, float]) -> float:
        return self.values["scratch"] if self.says_scratch(rule) else self.values["plan"]


def draws(doc: dict, n: int) -> list[Draw]:
    by = {name: entry["by_shots"][str(n)] for name, entry in doc["strategies"].items()}
    plan = by["plan"]
    out = []
    for s in range(doc["seeds"]):
        values = {name: b["runs"][s] for name, b in by.items()}
        diagnostics = plan["diagnostics"][s] if "diagnostics" in plan else None
        out.append(Draw(values, plan["network_evidence"][s], diagnostics))
    return out


def pair_summary(key: str, doc: dict, n: int, rule: tuple[str, float]) -> dict:
    """Means, the best reuse baseline, the regret of the plan under ``rule``, agreement and cost.

    A pair run with scratch and the plan only (N1-N4) takes the other strategies' means from round 2.
    """
    ds = draws(doc, n)
    means = {name: statistics.fmean(d.values[name] for d in ds) for name in ds[0].values}
    from_round2 = not any(b in means for b in BASELINES)
    if from_round2:
        reference = ROUND2[(key, n)]
        assert abs(reference["scratch"] - means["scratch"]) < 5e-4, f"{key} {n}: not round 2's draws"
        means = reference | means
    best = max((b for b in BASELINES if b in means), key=means.get)
    plan = [d.plan(rule) for d in ds]
    best_overall = max(means["scratch"], means[best])
    decisions = ["scratch" if d.says_scratch(rule) else "reuse" for d in ds]
    test, agree, winner = {"p": None}, None, None
    if not from_round2:
        scratch, reuse = [d.values["scratch"] for d in ds], [d.values[best] for d in ds]
        test = paired_test(reuse, scratch)
        if test["p"] is not None and test["p"] < 0.05:
            winner = "reuse" if means[best] > means["scratch"] else "scratch"
        per_draw = ["reuse" if d.values[best] >= d.values["scratch"] else "scratch" for d in ds]
        agree = sum(a == b for a, b in zip(decisions, per_draw))
    by = doc["strategies"]
    cost = None
    if "best-depth" in by:
        evidence = sum(by["plan"]["by_shots"][str(n)]["plan_seconds"])
        candidates = sum(by["best-depth"]["by_shots"][str(n)]["candidate_seconds"])
        cost = evidence / candidates
    return {
        "key": key, "shots": n, "scratch": means["scratch"], "best": best, "best_mean": means[best],
        "plan": statistics.fmean(plan), "plan_runs": plan, "reuse_plan": means["plan"],
        "regret": best_overall - statistics.fmean(plan), "p": test["p"], "winner": winner,
        "decisions": decisions, "agree": agree, "from_round2": from_round2,
        "majority": max(set(decisions), key=decisions.count), "cost": cost,
        "finetune_all": means.get("finetune-all"), "best_depth": means.get("best-depth"),
        "claim": claim(ds, doc, n),
    }  # fmt: skip


def claim(ds: list[Draw], doc: dict, n: int) -> dict | None:
    """The paper's two conditions per draw: J1 (all S's conv kernels in T_f within the tolerance, the better
    BN variant) and J3 (S's kernels closer to a freshly trained target than half the random null, median unit)."""
    if ds[0].diagnostics is None:
        return None
    tolerance = doc["config"]["thresholds"]["network_tolerance"]
    tolerance = 0.02 if tolerance is None else tolerance
    j1 = [min(v["drop"] for v in d.diagnostics["j1"].values()) <= tolerance for d in ds]
    j3 = [statistics.median(p for fold in d.diagnostics["j3_positions"] for p in fold) <= 0.5 for d in ds]
    favours = sum(d.network["difference"] > 0 for d in ds)
    return {"j1": sum(j1), "j3": sum(j3), "both": sum(a and b for a, b in zip(j1, j3)), "favours": favours,
            "draws": len(ds)}  # fmt: skip


def summaries(out: Path, shots: tuple[int, ...], rule, evaluation: bool, rnd: int) -> list[dict]:
    rows = []
    for key, pair in PAIRS.items():
        path = out / key / "transfer" / TRANSFER_FILE
        if not in_split(pair.split, rnd, evaluation) or not path.is_file():
            continue
        doc = read_json(path)
        for n in shots:
            if str(n) in doc["strategies"]["plan"]["by_shots"]:
                rows.append(pair_summary(key, doc, n, rule))
    return rows


def calibrate(out: Path, shots: tuple[int, ...], rnd: int) -> None:
    print("### Calibration pairs: mean regret of each candidate rule (better of scratch and the best reuse "
          "baseline, minus the plan), points\n")  # fmt: skip
    candidates(out, shots, evaluation=False, rnd=rnd)


def candidates(out: Path, shots: tuple[int, ...], evaluation: bool, rnd: int) -> None:
    """Each candidate rule's mean regret over the pairs of one split."""
    print("| rule | " + " | ".join(f"{n} shots" for n in shots) + " | worst pair | draws that train from scratch |")
    print("|---|" + "---|" * (len(shots) + 2))
    for rule in (("never", 0.0), *RULES):
        cells, worst, scratch, total = [], (0.0, ""), 0, 0
        for n in shots:
            rows = summaries(out, (n,), rule, evaluation=evaluation, rnd=rnd)
            regrets = [r["regret"] for r in rows]
            cells.append(f"{statistics.fmean(regrets) * 100:+.2f} ({len(rows)} pairs)" if rows else "–")
            for r in rows:
                worst = max(worst, (r["regret"], f"{r['key']} {n}"))
                scratch += r["decisions"].count("scratch")
                total += len(r["decisions"])
        name = "never (always reuse)" if rule[0] == "never" else f"{rule[0]}, margin {rule[1]}"
        print(f"| {name} | " + " | ".join(cells) + f" | {worst[0] * 100:.2f} ({worst[1]}) | {scratch} of {total} |")


def report(out: Path, shots: tuple[int, ...], evaluation: bool, rnd: int) -> None:
    split = f"evaluation pairs (round {rnd})" if evaluation else f"calibration pairs of round {rnd}"
    chosen = CHOSEN[rnd]
    print(f"### The chosen rule ({chosen[0]}, margin {chosen[1]}) on the {split}\n")
    for n in shots:
        rows = summaries(out, (n,), chosen, evaluation, rnd)
        if not rows:
            continue
        print(f"\n#### {n} shots, 5 seeds (target test metric, mean over seeds)\n")
        print("| pair | scratch | best reuse baseline | plan (reuse) | plan (decided) | regret, pts | decisions "
              "(reuse/scratch) | scratch vs reuse: p, winner | draws agreeing | cost |")  # fmt: skip
        print("|---|" + "---|" * 9)
        for r in rows:
            p = "–" if r["p"] is None else f"{r['p']:.2g}"
            cost = "–" if r["cost"] is None else f"{r['cost']:.2f}"
            print(f"| {r['key']} | {r['scratch']:.3f} | {r['best_mean']:.3f} ({r['best']}) | {r['reuse_plan']:.3f} | "
                  f"{r['plan']:.3f} | {r['regret'] * 100:+.1f} | {r['decisions'].count('reuse')}/"
                  f"{r['decisions'].count('scratch')} | {p}, {r['winner'] or 'no clear winner'} | "
                  f"{'–' if r['agree'] is None else r['agree']} of {len(r['decisions'])} | {cost} |")  # fmt: skip
        regrets = [r["regret"] for r in rows]
        spread = seed_interval(regrets)
        ci = f"[{spread['ci'][0] * 100:+.2f}, {spread['ci'][1] * 100:+.2f}]" if spread["ci"] else "(too few pairs)"
        agreeing = [r for r in rows if r["agree"] is not None]
        agree = sum(r["agree"] for r in agreeing), sum(len(r["decisions"]) for r in agreeing)
        clear = [r for r in rows if r["winner"]]
        right = sum(r["majority"] == r["winner"] for r in clear)
        costs = [r["cost"] for r in rows if r["cost"] is not None]
        print(f"\n- regret, mean over pairs: {statistics.fmean(regrets) * 100:+.2f} pts (95% t-interval over pairs "
              f"{ci}); goal <= 0.5: {'holds' if statistics.fmean(regrets) <= 0.005 else 'does not hold'}; "
              f"worst pair {max(regrets) * 100:+.2f} ({rows[regrets.index(max(regrets))]['key']}); goal <= 2: "
              f"{'holds' if max(regrets) <= 0.02 else 'does not hold'}")  # fmt: skip
        print(f"- pairs where scratch and the best reuse baseline differ with p < 0.05: {len(clear)}; the majority "
              f"decision is the winner on {right} of them; per-draw agreement with the draw's better of the two: "
              f"{agree[0]} of {agree[1]}")  # fmt: skip
        if costs:
            print(f"- the plan's evidence / best-depth's candidate trainings: {min(costs):.2f}-{max(costs):.2f}; "
                  f"goal <= 0.33: {'holds' if max(costs) <= 1 / 3 else 'does not hold'}")  # fmt: skip


def claim_table(out: Path, shots: tuple[int, ...], rnd: int) -> None:
    """The paper's conditions (J1, J3) and the cross-fitted evidence against the measured gain of reuse over scratch."""
    print("\n### The paper's claim as a prediction: does reuse beat scratch where J1 and J3 say so?\n")
    print("| pair | split | shots | gain of the best reuse baseline over scratch, pts (p) | J1 reusable | "
          "J3 small | J1 and J3 | evidence favours S |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    hits = {"J1 and J3 (the paper's claim)": [0, 0], "the cross-fitted evidence (mean > 0)": [0, 0],
            "always reuse": [0, 0]}  # fmt: skip
    for evaluation in (False, True):
        for n in shots:
            for r in summaries(out, (n,), CHOSEN[rnd], evaluation, rnd):
                c = r["claim"]
                if c is None:
                    continue
                gain = r["best_mean"] - r["scratch"]
                p = "–" if r["p"] is None else f"{r['p']:.2g}"
                favours = c["favours"]
                split = "evaluation" if evaluation else "calibration"
                print(f"| {r['key']} | {split} | {n} | {gain * 100:+.1f} ({p}) | {c['j1']}/{c['draws']} | "
                      f"{c['j3']}/{c['draws']} | {c['both']}/{c['draws']} | {favours}/{c['draws']} |")  # fmt: skip
                helps = r["winner"] == "reuse" if r["winner"] else (gain > 0 if abs(gain) >= 0.05 else None)
                if helps is None:  # only where the measured difference is clear (p < 0.05, or 5 points where no p)
                    continue
                for name, votes in zip(hits, (c["both"], favours, c["draws"])):
                    hits[name][0] += (votes * 2 > c["draws"]) == helps
                    hits[name][1] += 1
    for name, (right, total) in hits.items():
        print(f"- {name} predicts the clear winner (majority of draws) on {right} of {total} (pair, shots) cells")


def limits(out: Path, shots: tuple[int, ...], rnd: int) -> None:
    """What no network rule can beat: the regret if the decision between scratch and the reuse plan were
    perfect, per pair (the better of the two means) or per draw, over every pair with all baselines run."""
    print("\n### Limits: the regret with a perfect decision between scratch and the reuse plan\n")
    print("| decision | shots | pairs | mean regret, pts | pairs over 2 pts | worst pair |")
    print("|---|---|---|---|---|---|")
    widths = []
    for n in shots:
        docs = [(key, read_json(out / key / "transfer" / TRANSFER_FILE)) for key in PAIRS
                if (out / key / "transfer" / TRANSFER_FILE).is_file()]  # fmt: skip
        cells: dict[str, list[tuple[float, str]]] = {}
        for key, doc in docs:
            if str(n) not in doc["strategies"]["plan"]["by_shots"]:
                continue
            ds = draws(doc, n)
            if not all(b in ds[0].values for b in BASELINES):
                continue  # N1-N4: no per-draw baselines
            widths += [d.network["ci"][1] - d.network["ci"][0] for d in ds]
            mean = {name: statistics.fmean(d.values[name] for d in ds) for name in ds[0].values}
            best = max(mean["scratch"], *(mean[b] for b in BASELINES))
            choices = {
                f"the chosen rule ({CHOSEN[rnd][0]}, margin {CHOSEN[rnd][1]})": statistics.fmean(d.plan(CHOSEN[rnd]) for d in ds),
                "perfect per pair (the better mean of scratch and the reuse plan)": max(mean["scratch"], mean["plan"]),
                "perfect per draw": statistics.fmean(max(d.values["scratch"], d.values["plan"]) for d in ds),
            }  # fmt: skip
            for name, value in choices.items():
                cells.setdefault(name, []).append((best - value, key))
        for name, rows in cells.items():
            regrets = [r for r, _ in rows]
            worst = max(rows)
            print(f"| {name} | {n} | {len(rows)} | {statistics.fmean(regrets) * 100:+.2f} | "
                  f"{sum(r > 0.02 for r in regrets)} | {worst[0] * 100:+.1f} ({worst[1]}) |")  # fmt: skip
    if widths:
        print(f"\n- the evidence's 95% CI, median width over {len(widths)} draws: {statistics.median(widths):.3f} "
              f"(range {min(widths):.3f}-{max(widths):.3f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/r3"))
    parser.add_argument("--shots", default="5,10")
    parser.add_argument("--calibrate", action="store_true", help="compare the candidate rules on calibration pairs only")
    parser.add_argument("--limits", action="store_true", help="the regret a perfect decision would leave, every pair")
    parser.add_argument("--round", type=int, choices=ROUNDS, default=ROUNDS[-1], help="which round's split")
    args = parser.parse_args()
    shots, rnd = tuple(int(s) for s in args.shots.split(",")), args.round
    if args.limits:
        limits(args.out, shots, rnd)
        return
    if args.calibrate:
        calibrate(args.out, shots, rnd)
        report(args.out, shots, evaluation=False, rnd=rnd)
        return
    report(args.out, shots, evaluation=True, rnd=rnd)
    print("\n### For information only (not used to choose): every candidate rule on the evaluation pairs\n")
    candidates(args.out, shots, evaluation=True, rnd=rnd)
    claim_table(args.out, shots, rnd)


if __name__ == "__main__":
    main()
