"""Transfer: apply a reuse plan to a fresh target model, and the strategies it is measured against.

A *transplant* copies S's tensors into a freshly built target model unit by unit, as a plan
says (shape-checked; every copied and skipped tensor is listed). A *strategy* is a transplant
plus learning-rate scales: 0 freezes a unit (its BN statistics included), a fraction fine-tunes
it gently, 1 trains it as new.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paramreuse.errors import CheckpointError
from paramreuse.models.heads import head_module_name, in_head
from paramreuse.models.units import Unit, inventory

STRATEGIES = ("scratch", "finetune-all", "linear-probe", "lp-ft", "l2-sp", "auto-rgn", "plan", "best-depth")
ORACLES = ("best-depth",)  # choose among trained candidates on held-out labels: a ceiling, not a baseline
REUSE = ("reuse-frozen", "reuse-finetuned")


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
        decision = decisions.get(unit.name, "reinit") if unit is not None else None
        if unit is None:
            skipped.append((key, "not part of a parametric unit"))
        elif in_head(unit.name, head):
            skipped.append((key, "task head: fresh for the target's classes"))
        elif decision not in REUSE:
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


def lr_scales(target: nn.Module, decisions: dict[str, str], finetuned_scale: float) -> tuple[tuple[str, float], ...]:
    """Per-module learning-rate scales for a plan: frozen 0, gently fine-tuned ``finetuned_scale``."""
    scale = {"reuse-frozen": 0.0, "reuse-finetuned": finetuned_scale}
    return tuple(
        (prefix, scale[decisions[u.name]])
        for u in inventory(target)
        if decisions.get(u.name) in scale
        for prefix in unit_prefixes(u)
    )


@dataclass(frozen=True)
class Strategy:
    """How one strategy starts and trains: decisions per unit, lr scales, an optional penalty."""

    name: str
    decisions: dict
    lr_scale: tuple[tuple[str, float], ...]
    l2sp: bool = False  # pull the transplanted weights towards S's values while training
    depth: int | None = None
    warm_head: bool = False  # LP-FT: train the head alone on frozen S first, then everything
    auto_rgn: bool = False  # per-tensor rates by relative gradient norm (surgical fine-tuning)

    def describe(self) -> dict:
        return {"name": self.name, "depth": self.depth, "decisions": dict(self.decisions)}


class L2SP:
    """L2-SP (Li, Grandvalet & Davoine, ICML 2018): alpha/2 ||w - w_S||^2 on reused weights, beta/2 ||w||^2 on new ones."""

    def __init__(self, anchor: dict[str, torch.Tensor], alpha: float = 0.01, beta: float = 0.01):
        self.anchor, self.alpha, self.beta = {k: v.detach().clone() for k, v in anchor.items()}, alpha, beta

    def __call__(self, model: nn.Module) -> torch.Tensor:
        pulled, fresh = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name in self.anchor:
                pulled.append((p - self.anchor[name].to(p.device)).pow(2).sum())
            else:
                fresh.append(p.pow(2).sum())
        zero = next(model.parameters()).new_zeros(())
        return self.alpha / 2 * sum(pulled, zero) + self.beta / 2 * sum(fresh, zero)


def unit_names(model: nn.Module) -> list[str]:
    """The model's units in execution order, without its head."""
    head = head_module_name(model)
    return [u.name for u in inventory(model) if not in_head(u.name, head)]


def strategy(
    name: str, model: nn.Module, plan: dict[str, str] | None = None, depth: int | None = None,
    finetuned_scale: float = 0.1,
) -> Strategy:  # fmt: skip
    """The named strategy for ``model`` (a fresh target model).

    ``plan``: decisions per unit for ``plan``; ``depth``: frozen units 1..depth for a
    ``best-depth`` candidate.

    - ``lp-ft``: linear probe on frozen S, then fine-tune everything from that head (Kumar et
      al., ICLR 2022);
    - ``auto-rgn``: everything fine-tuned, each tensor's rate scaled by its relative gradient
      norm, recomputed every epoch (Auto-RGN, Lee et al., ICLR 2023).
    """
    names = unit_names(model)
    head = head_module_name(model)
    reuse_all = dict.fromkeys(names, "reuse-finetuned")
    if name == "scratch":
        return Strategy(name, {}, ())
    if name == "finetune-all":
        return Strategy(name, reuse_all, ())
    if name == "linear-probe":
        return Strategy(name, dict.fromkeys(names, "reuse-frozen"), (("", 0.0), (head, 1.0)))
    if name == "plan":
        if plan is None:
            raise ValueError("the plan strategy needs a plan (decisions per unit)")
        return Strategy(name, dict(plan), lr_scales(model, plan, finetuned_scale))
    if name == "best-depth":
        frozen = {n: ("reuse-frozen" if i < (depth or 0) else "reuse-finetuned") for i, n in enumerate(names)}
        return Strategy(name, frozen, lr_scales(model, frozen, 1.0), depth=depth)
    if name == "l2-sp":
        return Strategy(name, reuse_all, (), l2sp=True)
    if name == "lp-ft":
        return Strategy(name, reuse_all, (), warm_head=True)
    if name == "auto-rgn":
        return Strategy(name, reuse_all, (), auto_rgn=True)
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")



