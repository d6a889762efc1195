"""Caveats a study prints beside its verdicts: a validation set too small to judge, a model at chance.

Pure functions of numbers the study already has; each returns one warning string with the
numbers in it, or None when there is nothing to say.
"""

from __future__ import annotations

import math

import torch
from scipy import stats

from paramreuse.data import TaskData
from paramreuse.tasks import Task, get_task

CHANCE_MARGIN = 0.05  # within 5 points of chance (1/classes; a constant mask's Dice) a model has learnt ~nothing


def resolvable_drop(n_images: int, *, spread: float | None = None, confidence: float = 0.95) -> float:
    """The smallest mean drop that a paired ``confidence`` CI over ``n_images`` images can tell from no drop.

    The drop is the mean of per-image differences ``d_i`` (T's score minus the replaced model's),
    and its CI half-width is about ``z * sd(d) / sqrt(n)``. With ``spread`` (the standard deviation
    of the ``d_i``, e.g. measured in a sweep) the answer is ``z * spread / sqrt(n)``. Without it,
    per-image scores are taken as 0/1 (accuracy) in the most favourable case: a drop ``d`` makes a
    fraction ``d`` of the images flip one way and none the other, so ``sd = sqrt(d (1 - d))``, and
    ``z * sqrt(d (1 - d) / n) = d`` gives ``d = z^2 / (n + z^2)``. Real replacements flip images
    both ways, so this is a floor: a set that fails it cannot resolve the drop at all.
    """
    z = stats.norm.ppf(0.5 + confidence / 2)
    if spread is not None:
        return z * spread / math.sqrt(n_images)
    return z * z / (n_images + z * z)


def images_needed(tolerance: float, *, spread: float | None = None, confidence: float = 0.95) -> int:
    """The fewest images whose :func:`resolvable_drop` is at most ``tolerance`` (same rule, solved for n)."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    if spread is not None:
        return math.ceil((z * spread / tolerance) ** 2)
    return math.ceil(z * z * (1 - tolerance) / tolerance)


def validation_caveat(
    n_images: int,
    tolerance: float,
    *,
    metric: str = "accuracy",
    units: str = "fraction",
    spread: float | None = None,
    what: str = "validation set",
) -> str | None:
    """A warning when ``n_images`` images cannot resolve a drop of ``tolerance``, else None.

    The rule is :func:`resolvable_drop`: the 95% CI of the paired drop must be able to exclude
    zero at a drop of ``tolerance``. For accuracy (0/1 per image) the most favourable case needs
    no measurement (20 images resolve 0.16 at best, 189 are needed for 0.02); this rule implies
    the coarser one that an image, worth 1/n, must be below tolerance/2. For any other metric pass
    ``spread``, the standard deviation of the per-image differences; without it nothing is said.

    Args:
        n_images: images the drop is measured on.
        tolerance: the drop to resolve, in the metric's units.
        metric, units: for the message (``accuracy``/``fraction``, ``psnr``/``dB``, ...).
        spread: standard deviation of the per-image differences, when known.
        what: the set's name in the message.
    """
    if n_images < 1:
        return f"the {what} is empty, so no {metric} drop can be judged; give it images"
    if spread is None and metric != "accuracy":
        return None
    smallest = resolvable_drop(n_images, spread=spread)
    if smallest <= tolerance:
        return None
    unit = "" if units == "fraction" else f" {units}"
    per_image = f" (one image is worth {1 / n_images:.3f})" if metric == "accuracy" else ""
    return (
        f"the {what} has {n_images} images{per_image}: a 95% CI over them cannot resolve a drop of {metric} "
        f"below {smallest:.3g}{unit}, so the tolerance {tolerance:g}{unit} cannot be told from no drop; "
        f"judging it needs at least {images_needed(tolerance, spread=spread)} images"
    )


def chance_level(task: Task, num_classes: int, targets: torch.Tensor | None = None) -> float | None:
    """The metric of a model that learnt nothing, or None where there is no such level (PSNR).

    Accuracy: 1/classes (a balanced guess). Dice: the best a constant mask scores on ``targets``
    (every pixel one label; "all foreground" can score well above 0 when objects fill the image),
    or 0 (the empty mask) when no masks are given.
    """
    if task.name == "classification":
        return 1.0 / num_classes
    if task.name != "segmentation":
        return None
    if targets is None or not len(targets):
        return 0.0
    chunk = max(1, 2**24 // (num_classes * targets[0].numel()))  # about 64 MB of constant outputs at a time
    values = []
    for label in range(num_classes):
        scores = []
        for part in targets.split(chunk):
            constant = torch.zeros(len(part), num_classes, *part.shape[1:])
            constant[:, label] = 1.0
            scores.append(task.scores(constant, part))
        values.append(float(torch.cat(scores).mean()))
    return max(values)


def chance_caveats(
    models: dict[str, float | None], task: Task | str, num_classes: int, *, margin: float = CHANCE_MARGIN,
    chance: float | None = None, fix: str = "train them longer or check their data",
) -> str | None:  # fmt: skip
    """One warning naming every model of ``models`` (name -> metric) at or near chance, else None.

    Near chance is at or below ``chance + margin``; chance is :func:`chance_level` unless given
    (a segmenter's best constant mask, measured on its test masks). A reconstruction has no
    chance level, so nothing is said. The line states the chance level and the threshold.
    """
    task = get_task(task) if isinstance(task, str) else task
    chance = chance_level(task, num_classes) if chance is None else chance
    if chance is None:
        return None
    threshold = chance + margin
    low = {n: v for n, v in models.items() if v is not None and v <= threshold}
    if not low:
        return None
    if task.name == "classification":
        level = f"chance 1/{num_classes} = {chance:.3f}"
    else:
        level = f"chance {chance:.3f}, the best constant mask"
    named = ", ".join(f"{n} {task.metric_name} {v:.3f}" for n, v in low.items())
    one = len(low) == 1
    return (
        f"{named}: at or below {threshold:.3f} ({level}, + margin {margin:g}), so {'it has' if one else 'they have'} "
        f"learnt almost nothing and verdicts that compare with {'it' if one else 'them'} say little; {fix}"
    )


CHANCE_FIX = {  # how to train each model longer, in its warning
    "source": "train S longer ([training.source] epochs in --config) or check its data",
    "fewshot": "train them longer (--steps, or --epochs with --min-steps; [training] in --config), give more shots, "
    "or check the data",
    "full": "train T_full longer ([training.full] epochs in --config) or check the data",
}


def chance_warnings(
    source: TaskData | None, target: TaskData, metrics: dict[str, float | None], strategies: dict[str, float], *,
    seeds: int, margin: float = CHANCE_MARGIN,
) -> list[str]:  # fmt: skip
    """Every model of a study at or near chance, grouped by what would train it longer.

    ``metrics``: test metrics of ``source`` (S on its own test set, None when not evaluated),
    ``target`` (T), ``scratch`` and ``full``; ``strategies``: each transfer strategy's mean over
    ``seeds``. Chance is measured on each side's test set (see :func:`chance_level`).
    """
    found = []
    if source is not None:
        chance = chance_level(source.kind, source.num_outputs, source.kind.targets(source.test))
        found.append(chance_caveats({"S (on its own test set)": metrics["source"]}, source.kind, source.num_outputs,
                                    margin=margin, chance=chance, fix=CHANCE_FIX["source"]))  # fmt: skip
    chance = chance_level(target.kind, target.num_outputs, target.kind.targets(target.test))
    fewshot = {"T": metrics["target"], "T_scratch": metrics["scratch"]}
    fewshot |= {f"transfer {name} (mean of {seeds} seeds)": value for name, value in strategies.items()}
    for models, fix in ((fewshot, CHANCE_FIX["fewshot"]), ({"T_full": metrics["full"]}, CHANCE_FIX["full"])):
        found.append(chance_caveats(models, target.kind, target.num_outputs, margin=margin, chance=chance, fix=fix))
    return [w for w in found if w]


TRAINED_FIX = {  # how to train each model longer, in its warning
    "S": "raise [training.source] epochs in --config",
    "T_full": "raise [training.full] epochs in --config, or drop its steps",
}


def short_training_warnings(trained: dict[str, dict], *, floor: int) -> list[str]:
    """Models whose training looks too short for their data: fewer optimiser steps than ``floor``, the
    steps each few-shot training of the study took (on the shots, with its min_steps floor).

    ``trained``: a label (``S``, ``T_full``, ...) -> ``steps``, ``epochs`` and ``images`` it trained on.

    >>> short_training_warnings({"T_full": {"steps": 12, "epochs": 3, "images": 488}}, floor=150)[0][:60]
    'T_full trained 12 optimiser steps (3 epochs over 488 images)'
    """
    found = []
    for label, done in trained.items():
        if done.get("steps") is None or done["steps"] >= floor:
            continue
        fix = TRAINED_FIX.get(label, "train it longer")
        found.append(
            f"{label} trained {done['steps']} optimiser steps ({done['epochs']} epoch{'' if done['epochs'] == 1 else 's'} "
            f"over {done['images']} images), "
            f"fewer than the {floor} steps of each few-shot training (the threshold: too short for its data below "
            f"that), so comparisons with it say little; {fix}"
        )
    return found
