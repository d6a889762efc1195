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
