"""Class selection, validation carving and few-shot sampling, all deterministic in the seed."""

from __future__ import annotations

import re

import torch

from paramreuse.data.sources import ImageSet
from paramreuse.errors import DataError

VAL_FRACTION = 0.1
VAL_CAP_PER_CLASS = 500


def parse_classes(text: str | None) -> tuple[int, ...] | None:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"5,6,7"`` -> (5, 6, 7); ``"0-2,7"`` mixes both.

    >>> parse_classes("0-2,7")
    (0, 1, 2, 7)
    """
    if text is None or text.strip() in ("", "all"):
        return None
    classes: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise DataError(f"cannot read classes {text!r}; write a range like 0-4 or a list like 5,6,7")
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if hi < lo:
            raise DataError(f"class range {part.strip()!r} runs backwards; write {hi}-{lo}")
        classes.extend(range(lo, hi + 1))
    if len(set(classes)) != len(classes):
        raise DataError(f"classes {text!r} name a class twice")
    return tuple(classes)


def select_classes(data: ImageSet, classes: tuple[int, ...], where: str) -> ImageSet:
    """Keep only ``classes`` and relabel them 0..C-1 in the order given."""
    present = set(torch.unique(data.y).tolist())
    absent = [c for c in classes if c not in present]
    if absent:
        raise DataError(
            f"class {', '.join(map(str, absent))} not present in {where} "
            f"(it has classes {_ranges(sorted(present))}); choose --classes among those"
        )
    lookup = torch.full((max(present) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lookup[data.y] >= 0
    names = tuple(data.class_names[c] if c < len(data.class_names) else str(c) for c in classes)
    mask = None if data.mask is None else data.mask[keep]
    return ImageSet(data.x[keep], lookup[data.y[keep]], names, mask, data.mask_names)


def _ranges(values: list[int]) -> str:
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))


def per_class_split(
    y: torch.Tensor, counts: dict[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``counts[c]`` random indices of each class; return (picked, rest) index tensors."""
    picked, rest = [], []
    for c in sorted(counts):
        members = torch.nonzero(y == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        picked.append(members[: counts[c]])
        rest.append(members[counts[c] :])
    return torch.cat(picked).sort().values, torch.cat(rest).sort().values


def carve(
    train: ImageSet,
    seed: int,
    shots: int | None = None,
    limit_per_class: int | None = None,
    val_per_class: int | None = None,
    where: str = "the data",
) -> tuple[ImageSet, ImageSet]:
    """Split ``train`` into (train, validation) with the seed.

    Validation takes ``val_per_class`` images of each class (default: 10%, at most 500); from
    the rest, ``shots`` per class are sampled (an error when a class has fewer), or at most
    ``limit_per_class`` per class are kept.
    """
    g = torch.Generator().manual_seed(seed)
    sizes = {c: int((train.y == c).sum()) for c in range(len(train.class_names))}
    val_counts = {
        c: val_per_class if val_per_class is not None else min(max(1, round(VAL_FRACTION * n)), VAL_CAP_PER_CLASS)
        for c, n in sizes.items()
    }
    if any(val_counts[c] >= n for c, n in sizes.items()):
        raise DataError(f"{where}: too few images per class to carve a validation set; add images or use fewer classes")
    val_index, pool_index = per_class_split(train.y, val_counts, g)
    pool = train.subset(pool_index)
    if shots is not None:
        short = {c: sizes[c] - val_counts[c] for c in sizes if sizes[c] - val_counts[c] < shots}
        if shots < 1 or short:
            c, n = next(iter(short.items())) if short else (0, 0)
            raise DataError(
                f"asked for {shots} shots per class but {where} class {train.class_names[c]!r} has only {n} "
                f"training images after validation; use --shots {n} or fewer"
                if short
                else f"--shots must be at least 1, got {shots}"
            )
        keep, _ = per_class_split(pool.y, {c: shots for c in sizes}, g)
        pool = pool.subset(keep)
    elif limit_per_class is not None:
        keep, _ = per_class_split(pool.y, {c: min(limit_per_class, sizes[c]) for c in sizes}, g)
        pool = pool.subset(keep)
    return pool, train.subset(val_index)
