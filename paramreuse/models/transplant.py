"""Transplant: S's tensors copied into a target model unit by unit, as a plan's decisions say.

Shape-checked, every copied and skipped tensor listed; the head is never copied (it is fresh
for the target's outputs).
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
    """Copy S's tensors of every unit whose decision is reuse-* into ``target``.

    Raises:
        CheckpointError: a tensor to copy is missing from S or differs in shape (all listed).
    """
    units = inventory(target)
    head = head_module_name(target)
    own = target.state_dict()
    copied, skipped, problems = [], [], []
    for key in own:
        unit = _owner(key, units)
        decision = decisions.get(unit.name, Decision.REINIT.value) if unit is not None else None
        if unit is None:
            skipped.append((key, "not part of a parametric unit"))
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


def unit_names(model: nn.Module) -> list[str]:
    """The model's units in execution order, without its head."""
    head = head_module_name(model)
    return [u.name for u in inventory(model) if not in_head(u.name, head)]
