"""Names that cross a boundary (plan.json, transfer.json, the report): one enum or tuple each, torch-free.

The judge writes them, transfer applies them, and the report reads them back from the result
files without importing either.
"""

from __future__ import annotations

import enum


class Decision(enum.StrEnum):
    """What the plan does with one unit (its value is the name used in plan.json)."""

    FROZEN = "reuse-frozen"
    FINETUNED = "reuse-finetuned"
    REINIT = "reinit"


DECISIONS = tuple(d.value for d in Decision)
REUSE_DECISIONS = (Decision.FROZEN.value, Decision.FINETUNED.value)

# Strategies that choose among trained candidates with held-out labels a user does not have: a
# ceiling, not a baseline. transfer.json flags them ("oracle": true); the report names them "(oracle)".
ORACLES = ("best-depth",)


class Budget(enum.StrEnum):
    """The labelled target images a judgement or a transfer run may use."""

    SHOTS = "shots"  # only the shots: judged by cross-fitting on them
    VALIDATION_SET = "validation-set"  # plus a carved validation set, far more labels than a few-shot user has

    @property
    def data_options(self) -> dict:
        """What the budget means for loading target data (:func:`paramreuse.data.load_task` arguments)."""
        return {"val_per_class": 0} if self is Budget.SHOTS else {}


BUDGETS = tuple(b.value for b in Budget)


def network_votes(choices: list[str] | tuple[str, ...]) -> dict:
    """The network decisions of several draws (``reuse``/``scratch`` each) counted: the decision most draws
    made (``majority``; a tie reuses S, as the network rule does) and whether they ``disagree``.

    >>> network_votes(["reuse", "scratch", "scratch"])
    {'majority': 'scratch', 'reuse': 1, 'scratch': 2, 'draws': 3, 'disagree': True}
    """
    reuse, scratch = list(choices).count("reuse"), list(choices).count("scratch")
    return {"majority": "scratch" if scratch > reuse else "reuse", "reuse": reuse, "scratch": scratch,
            "draws": len(choices), "disagree": bool(reuse and scratch)}  # fmt: skip


SHOWN_CLASSES = 12


def classes_text(ids: list[int] | tuple[int, ...], names: list[str] | tuple[str, ...] = ()) -> str:
    """Classes as messages name them: names, with their numbers in brackets (``Sandal, Shirt (5, 6)``).

    Names alone when every name is a number (digits, folders named ``1``, ``2``): those names are
    what ``--classes`` means; numbers alone when no names are known.

    >>> classes_text([5, 6, 7], ["Sandal", "Shirt", "Sneaker"])
    'Sandal, Shirt, Sneaker (5-7)'
    >>> classes_text([0, 2], ["five", "six"])
    'five, six (0, 2)'
    >>> classes_text([3, 4], ["3", "4"])
    '3, 4'
    """
    ids, names = [int(i) for i in ids], [str(n) for n in names]
    numbers = _numbers(ids)
    if len(names) != len(ids) or not names:
        return numbers
    shown = ", ".join(names[:SHOWN_CLASSES]) + (f" and {len(names) - SHOWN_CLASSES} more" if len(names) > SHOWN_CLASSES else "")
    return shown if all(n.isdigit() for n in names) else f"{shown} ({numbers})"


def _numbers(ids: list[int]) -> str:
    if len(ids) > 2 and ids == list(range(ids[0], ids[0] + len(ids))):
        return f"{ids[0]}-{ids[-1]}"
    return ", ".join(map(str, ids))


# The per-image scores the network decision can be measured in (paramreuse.judge.evidence), in words.
SCORE_NAMES = {"correct": None, "brier": "Brier score", "true-prob": "true-class probability",
               "log-loss-ts": "log-likelihood (temperature-scaled)", "soft-dice": "soft Dice"}  # fmt: skip


def score_name(score: str | None) -> str | None:
    """What the network decision's difference is measured in; None for the task's own metric (0/1, hard Dice, PSNR).

    >>> score_name("true-prob"), score_name("correct"), score_name(None)
    ('true-class probability', None, None)
    """
    return SCORE_NAMES.get(score or "correct", score)
