"""Transfer: apply a reuse plan to a fresh target model, and the strategies it is measured against.

A *transplant* (:mod:`paramreuse.models.transplant`) copies S's tensors into a freshly built
target model unit by unit, as a plan says, and S's tensors outside every unit (PReLU slopes,
learned scales) whenever it reuses any unit. A *strategy* is a transplant
plus learning-rate scales: 0 freezes a unit (its BN statistics included), a fraction fine-tunes
it gently, 1 trains it as new. Scales are per unit: tensors outside units train at the normal
rate even beside a frozen prefix (only ``linear-probe`` freezes them, with everything but the head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from paramreuse.models.heads import head_module_name
from paramreuse.models.transplant import TransplantReport, transplant, unit_names, unit_prefixes
from paramreuse.models.units import inventory
from paramreuse.vocabulary import ORACLES, Decision

__all__ = [
    "L2SP",
    "ORACLES",
    "STRATEGIES",
    "Strategy",
    "TransplantReport",
    "lr_scales",
    "strategy",
    "transplant",
    "unit_names",
    "unit_prefixes",
]  # fmt: skip

STRATEGIES = ("scratch", "finetune-all", "linear-probe", "lp-ft", "l2-sp", "auto-rgn", "plan", "best-depth")


def lr_scales(target: nn.Module, decisions: dict[str, str], finetuned_scale: float) -> tuple[tuple[str, float], ...]:
    """Per-module learning-rate scales for a plan: frozen 0, gently fine-tuned ``finetuned_scale``.

    Only units' modules are listed; tensors outside every unit keep the normal rate.
    """
    scale = {Decision.FROZEN.value: 0.0, Decision.FINETUNED.value: finetuned_scale}
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
    reuse_all = dict.fromkeys(names, Decision.FINETUNED.value)
    if name == "scratch":
        return Strategy(name, {}, ())
    if name == "finetune-all":
        return Strategy(name, reuse_all, ())
    if name == "linear-probe":
        return Strategy(name, dict.fromkeys(names, Decision.FROZEN.value), (("", 0.0), (head, 1.0)))
    if name == "plan":
        if plan is None:
            raise ValueError("the plan strategy needs a plan (decisions per unit)")
        return Strategy(name, dict(plan), lr_scales(model, plan, finetuned_scale))
    if name == "best-depth":
        frozen = {n: (Decision.FROZEN.value if i < (depth or 0) else Decision.FINETUNED.value) for i, n in enumerate(names)}
        return Strategy(name, frozen, lr_scales(model, frozen, 1.0), depth=depth)
    if name == "l2-sp":
        return Strategy(name, reuse_all, (), l2sp=True)
    if name == "lp-ft":
        return Strategy(name, reuse_all, (), warm_head=True)
    if name == "auto-rgn":
        return Strategy(name, reuse_all, (), auto_rgn=True)
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")



