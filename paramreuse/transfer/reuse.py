"""A plan in your own code: load plan.json, apply it to a model, get optimiser groups with its rates.

    plan = paramreuse.load_plan("runs/study/plan.json")
    applied = paramreuse.apply_plan(model, plan, "runs/study/source/model.safetensors")
    optimiser = torch.optim.SGD(paramreuse.param_groups(model, plan, lr=1e-2), momentum=0.9)

The rules are the ``plan`` strategy's (:func:`paramreuse.transfer.strategies.strategy`), the ones
every transfer run follows: S's tensors are copied unit by unit as the plan says, and S's
tensors outside units whenever it reuses any unit (:func:`paramreuse.models.transplant.transplant`);
frozen units get no gradient and their normalisation layers stay in eval mode (S's statistics,
as the training loop holds them); re-initialised units are drawn afresh; reuse-finetuned units
train at the plan's ``finetuned_rate`` x the rate. :func:`train_with_plan` is what
``paramreuse apply`` runs: the plan trained on a task, as the transfer grid trains it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from paramreuse.data import TaskData
from paramreuse.errors import ParamreuseError, PlanError
from paramreuse.judge.plan import Plan, plan_decisions
from paramreuse.judge.verdicts import Thresholds
from paramreuse.models import build_model, load_checkpoint, read_info, read_state_dict, save_checkpoint
from paramreuse.models.state_dicts import check_finite, state_digest
from paramreuse.models.units import inventory
from paramreuse.results import fingerprint, load_if_current, prepare_out_dir, read_json, write_atomic, write_json
from paramreuse.training import loop
from paramreuse.training.run import MODEL_FILE, model_info
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.runs import run_one
from paramreuse.transfer.strategies import TransplantReport, strategy, transplant, unit_prefixes
from paramreuse.vocabulary import Decision

MODEL_RECORD = "model.json"  # beside model.safetensors: its test metric, the plan it followed, how to load it
PlanLike = Plan | Mapping | str | Path


@dataclass(frozen=True)
class AppliedPlan:
    """What :func:`apply_plan` did: S's tensors copied and left fresh, parameters frozen, units re-initialised."""

    transplant: TransplantReport
    frozen: tuple[str, ...]  # parameter names without gradient
    reinitialised: tuple[str, ...]  # unit names drawn afresh
    held_norms: tuple[str, ...]  # normalisation layers held in eval mode (S's statistics)

    def to_dict(self) -> dict:
        return {"transplant": self.transplant.to_dict(), "frozen": list(self.frozen),
                "reinitialised": list(self.reinitialised), "held_norms": list(self.held_norms)}  # fmt: skip


def load_plan(path: str | Path) -> Plan:
    """The plan of a plan.json written by ``paramreuse plan`` or a study.

    Raises:
        PlanError: the file is missing, not JSON, or not a plan.
    """
    return _from_doc(_read(path), str(path))


def plan_settings(path: str | Path) -> tuple[dict[str, str], Thresholds]:
    """A plan.json's decisions per unit and the settings it was made with (``finetuned_rate``,
    ``warm_head``): the defaults for a hand-written plan that lists only its layers' decisions.

    Raises:
        PlanError: the file is missing, not JSON, or has no layers with decisions.
    """
    doc = _read(path)
    try:
        return plan_decisions(doc), Thresholds(**doc.get("thresholds", {}))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _not_a_plan(str(path), exc) from None


def _read(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise PlanError(f"plan file {path} does not exist; check the path (`paramreuse plan` and `paramreuse study` "
                        "write plan.json)")  # fmt: skip
    try:
        return read_json(path)
    except ParamreuseError as exc:  # not JSON: read_json's one line, as the plan's error
        raise PlanError(str(exc)) from None


def _from_doc(doc, where: str) -> Plan:
    try:
        return Plan.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _not_a_plan(where, exc) from None


def _not_a_plan(where: str, exc: Exception) -> PlanError:
    return PlanError(f"{where} is not a plan ({type(exc).__name__}: {exc}); use the plan.json that "
                     "`paramreuse plan` or `paramreuse study` writes")  # fmt: skip


def as_plan(plan: PlanLike) -> Plan:
    """A :class:`Plan`, its plan.json document, or the path of one, as a :class:`Plan`."""
    if isinstance(plan, Plan):
        return plan
    if isinstance(plan, Mapping):
        return _from_doc(dict(plan), "the plan")
    return load_plan(plan)


def check_plan(model: nn.Module, decisions: Mapping[str, str], where: str = "the plan") -> None:
    """Every unit the plan names is a unit of ``model`` (a unit it does not name is re-initialised).

    Raises:
        PlanError: naming the units that are not in the model, a few of the model's, and the fix.
    """
    units = [u.name for u in inventory(model)]
    unknown = [name for name in decisions if name not in units]
    if unknown:
        raise PlanError(f"{where} does not fit the model: its units {_listed(unknown)} are not in it (the model's "
                        f"units are {_listed(units)}); make the plan for this architecture with `paramreuse plan` "
                        "or `paramreuse study`")  # fmt: skip


def _listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _source_state(source) -> dict[str, torch.Tensor]:
    """S's tensors from a state dict, a model, a checkpoint file, or a pretrained spec."""
    if isinstance(source, nn.Module):
        return {k: v.detach() for k, v in source.state_dict().items()}
    if isinstance(source, Mapping):
        return dict(source)
    if Path(str(source)).is_file():
        state = read_state_dict(source)
        check_finite(state, str(source))
        return state
    return load_checkpoint(source)[0].state_dict()  # a pretrained spec, or the one-line "does not exist"


def _plan_strategy(model: nn.Module, plan: Plan):
    decisions = plan.decisions()
    check_plan(model, decisions)
    return strategy("plan", model, decisions, finetuned_scale=plan.thresholds.finetuned_rate)


def apply_plan(model: nn.Module, plan: PlanLike, source) -> AppliedPlan:
    """Put S into ``model`` as ``plan`` says, in place: copy, freeze, re-initialise.

    Args:
        model: the target model (built for the target's channels and classes, e.g. with
            :func:`paramreuse.build_model`); its head always stays its own.
        plan: a :class:`~paramreuse.judge.plan.Plan`, its plan.json document, or the file's path.
        source: S: a state dict, a model, a checkpoint file, or a pretrained spec.

    Frozen units' parameters get ``requires_grad=False`` and their normalisation layers are held
    in eval mode (a forward pre-hook puts them back after ``model.train()``), so their statistics
    stay S's, as in paramreuse's own training loop.
    """
    plan = as_plan(plan)
    chosen = _plan_strategy(model, plan)
    state = _source_state(source)  # read (and checked) before the model is touched
    reinit = tuple(u.name for u in inventory(model) if chosen.decisions.get(u.name, Decision.REINIT.value) == Decision.REINIT.value)
    named = dict(model.named_modules())
    for unit in (u for u in inventory(model) if u.name in reinit):
        for prefix in unit_prefixes(unit):
            if hasattr(named[prefix], "reset_parameters"):
                named[prefix].reset_parameters()
    report = transplant(state, model, chosen.decisions)
    _, frozen = loop.param_groups(model, loop.TrainConfig(lr_scale=chosen.lr_scale))  # sets requires_grad
    held = loop.frozen_norms(model, frozen)
    for module in held:
        module.eval()
        module.register_forward_pre_hook(_hold_eval)
    names = {id(m): n for n, m in named.items()}
    return AppliedPlan(report, tuple(sorted(frozen)), reinit, tuple(names[id(m)] for m in held))


def _hold_eval(module: nn.Module, _inputs) -> None:
    module.train(False)


def param_groups(model: nn.Module, plan: PlanLike, lr: float = 1e-3) -> list[dict]:
    """Optimiser parameter groups with the plan's rates, for any ``torch.optim`` optimiser.

    Frozen units are left out (their parameters get ``requires_grad=False``); reuse-finetuned units
    train at ``lr`` x the plan's ``finetuned_rate``; re-initialised units, the head and tensors
    outside units at ``lr``. Each group is ``{"params": [...], "lr": ...}``.
    """
    chosen = _plan_strategy(model, as_plan(plan))
    groups, _ = loop.param_groups(model, loop.TrainConfig(lr=lr, lr_scale=chosen.lr_scale))
    return groups


def train_with_plan(
    source: Source, task: TaskData, plan: Plan, out: str | Path, *, seed: int = 0,
    config: TransferConfig | None = None, device: torch.device | str = "cpu",
) -> dict:  # fmt: skip
    """Train a target from S on ``task`` as ``plan`` says (as the transfer grid's ``plan`` runs train it),
    test it, and write ``model.safetensors`` and ``model.json`` to ``out``; a current ``model.json`` is resumed.

    The plan's ``finetuned_rate`` and ``warm_head`` (LP-FT's head warm-up, when it reuses S) apply;
    ``config.training`` is how (default: the few-shot recipe of every transfer run).
    Returns the content of ``model.json``.
    """
    out, config = prepare_out_dir(out), config or TransferConfig()
    key = fingerprint({"source": [source.arch, state_digest(source.state)], "plan": plan.decisions(),
                       "thresholds": plan.thresholds.to_dict(), "data": task.describe(), "seed": seed,
                       "training": config.training.to_dict()})  # fmt: skip
    done = load_if_current(out / MODEL_RECORD, key)
    if done is not None and (out / MODEL_FILE).is_file():
        return done | {"resumed": True}
    check_plan(build_model(source.arch, task.channels, task.num_outputs), plan.decisions())
    planned = replace(config, finetuned_scale=plan.thresholds.finetuned_rate)
    result = run_one(source, task, "plan", plan=plan.decisions(), seed=seed, config=planned, device=device,
                     warm_head=plan.thresholds.warm_head and plan.reuses)  # fmt: skip
    record = {"fingerprint": key, "model": MODEL_FILE, "strategy": "plan", "metric": task.kind.metric_name,
              "test_metric": result["value"], "seed": seed, "data": task.describe(),
              "decision": "reuse" if plan.reuses else "scratch", "decisions": plan.decisions()}  # fmt: skip
    save_checkpoint(out / MODEL_FILE, result["model"].cpu(), model_info(source.arch, task, _summary(record)))
    write_json(out / MODEL_RECORD, record)
    return record | {"resumed": False}


def _summary(record: dict) -> dict:
    """What a checkpoint records of how it was made (in its ModelInfo's ``extra``)."""
    return {k: record[k] for k in ("strategy", "metric", "test_metric", "seed", "decisions") if k in record}


def publish_model(transfer_out: str | Path, transfer: dict, strategy_name: str, out: str | Path, *, why: str) -> dict:
    """Copy the kept model of ``strategy_name`` (``transfer["model_files"]``) to ``out/model.safetensors`` and
    describe it in ``out/model.json``; files that already hold it are left untouched. Returns ``model.json``."""
    source, out = Path(transfer_out) / transfer["model_files"][strategy_name], Path(out)
    data = source.read_bytes()
    key = fingerprint({"transfer": transfer["fingerprint"], "strategy": strategy_name,
                       "sha256": hashlib.sha256(data).hexdigest()})  # fmt: skip
    done = load_if_current(out / MODEL_RECORD, key)
    if done is not None and (out / MODEL_FILE).is_file():
        return done
    info = read_info(source)
    made = info.extra if info is not None else {}
    record = {"fingerprint": key, "model": MODEL_FILE, "strategy": strategy_name, "why": why,
              "copied_from": str(source.relative_to(out)) if source.is_relative_to(out) else str(source),
              **{k: made.get(k) for k in ("metric", "test_metric", "shots", "seed", "decisions")}}  # fmt: skip
    write_atomic(out / MODEL_FILE, data)
    write_json(out / MODEL_RECORD, record)
    return record
