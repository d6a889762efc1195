"""Transplant: S's tensors copied into a target model unit by unit, as a plan's decisions say.

Shape-checked, every copied and skipped tensor listed; the head is never copied (it is fresh
for the target's outputs). A tensor outside every unit (a PReLU's slopes, a learned scale, a
norm the inventory did not pair) has no decision of its own: it follows the plan's reuse of S,
copied whenever any unit of S is reused, and left fresh (listed with why) when S lacks it or
its shape differs, the same rule as ``train --init``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.units import Unit, inventory
from paramreuse.vocabulary import REUSE_DECISIONS, Decision


@dataclass(frozen=True)
class TransplantReport:
    """Which state-dict keys came from S and which stayed fresh, with why."""

    copied: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict:
        return {"copied": list(self.copied), "skipped": [{"key": k, "reason": r} for k, r in self.skipped]}


def unit_prefixes(unit: Unit) -> tuple[str, ...]:
    """Module names a unit owns: its main layer and its norm."""
    return (unit.name,) if unit.norm is None else (unit.name, unit.norm)


def _owner(key: str, units: tuple[Unit, ...]) -> Unit | None:
    for unit in units:
        if any(key.startswith(p + ".") for p in unit_prefixes(unit)):
            return unit
    return None


def transplant(source_state: dict[str, torch.Tensor], target: nn.Module, decisions: dict[str, str]) -> TransplantReport:
    """Copy S's tensors of every unit whose decision is reuse-* into ``target``, and S's tensors outside units.

    A tensor outside every unit and outside the head is copied when the decisions reuse any unit
    (so not for ``scratch`` nor a plan that re-initialises every unit) and S has it with the
    same shape; otherwise it stays fresh and is listed in ``skipped`` with the reason.

    Raises:
        CheckpointError: a unit's tensor to copy is missing from S or differs in shape (all listed).
    """
    units = inventory(target)
    head = head_module_name(target)
    own = target.state_dict()
    reuses_s = any(decisions.get(u.name) in REUSE_DECISIONS for u in units if not in_head(u.name, head))
    copied, skipped, problems = [], [], []
    for key in own:
        unit = _owner(key, units)
        decision = decisions.get(unit.name, Decision.REINIT.value) if unit is not None else None
        if unit is None:
            reason = _outside_units(key, own[key], source_state, head, reuses_s)
            if reason is None:
                copied.append(key)
            else:
                skipped.append((key, reason))
        elif in_head(unit.name, head):
            skipped.append((key, "task head: fresh for the target's classes"))
        elif decision not in REUSE_DECISIONS:
            skipped.append((key, f"{unit.name}: {decision}"))
        elif key not in source_state:
            problems.append(f"{key} missing in S")
        elif source_state[key].shape != own[key].shape:
            problems.append(f"{key} {tuple(source_state[key].shape)} in S vs {tuple(own[key].shape)} in the target")
        else:
            copied.append(key)
    if problems:
        raise CheckpointError(f"cannot transplant S into the target model: {'; '.join(problems[:6])}")
    with torch.no_grad():
        for key in copied:
            own[key].copy_(source_state[key])
    return TransplantReport(tuple(copied), tuple(skipped))


def _outside_units(key: str, tensor: torch.Tensor, source_state: dict, head: str, reuses_s: bool) -> str | None:
    """Why a tensor outside every unit stays fresh, or None when it is copied from S."""
    if in_head(key.rpartition(".")[0], head):
        return "task head: fresh for the target's classes"
    if not reuses_s:
        return "outside the units; no unit of S is reused"
    if key not in source_state:
        return "outside the units; missing in S"
    if source_state[key].shape != tensor.shape:
        return f"outside the units; {tuple(source_state[key].shape)} in S vs {tuple(tensor.shape)} in the target"
    return None


def unit_names(model: nn.Module) -> list[str]:
    """The model's units in execution order, without its head."""
    head = head_module_name(model)
    return [u.name for u in inventory(model) if not in_head(u.name, head)]
