"""Caveats a study prints beside its verdicts: a validation set too small to judge, a model at chance.

Pure functions of numbers the study already has; each returns one warning string with the
numbers in it, or None when there is nothing to say.
"""

from __future__ import annotations

import math

from scipy import stats

from paramreuse.tasks import Task, get_task

CHANCE_MARGIN = 0.05  # a classifier within 5 points of 1/classes (a Dice within 0.05 of 0) has learnt ~nothing


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


def chance_level(task: Task, num_classes: int) -> float | None:
    """The metric of a model that learnt nothing: 1/classes for accuracy, 0 for Dice; None for PSNR."""
    if task.name == "classification":
        return 1.0 / num_classes
    if task.name == "segmentation":
        return 0.0
    return None


def chance_caveat(
    name: str, value: float, task: Task | str, num_classes: int, *, margin: float = CHANCE_MARGIN
) -> str | None:
    """A warning when model ``name`` scores at (or within ``margin`` of) chance, else None.

    Chance is 1/``num_classes`` for a classifier and a Dice of 0 for a segmenter (it finds no
    foreground); a reconstruction has no chance level, so nothing is said.
    """
    task = get_task(task) if isinstance(task, str) else task
    chance = chance_level(task, num_classes)
    if chance is None or value > chance + margin:
        return None
    level = f"chance (1/{num_classes} = {chance:.3f})" if task.name == "classification" else f"{chance:g}"
    return (
        f"{name} scores {task.metric_name} {value:.3f}, within {margin:g} of {level}: it has learnt almost "
        f"nothing, so verdicts that compare with it say little; train it longer or check its data"
    )
