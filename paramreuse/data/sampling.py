"""Class selection, validation carving and few-shot sampling, all deterministic in the seed."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

import torch

from paramreuse.data.sources import ImageSet
from paramreuse.errors import DataError
from paramreuse.vocabulary import classes_text

VAL_FRACTION = 0.1
DRAW = "shots-first"  # how carve draws (a resume key names it: a grid of runs drawn another way is not resumed)
VAL_CAP_PER_CLASS = 500


NUMBERS = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
SHOWN_NAMES = 12


def parse_classes(
    text: str | None, class_names: Sequence[str] | None = None, where: str = "the data"
) -> tuple[int, ...] | None:
    """``"0-4"`` -> (0, 1, 2, 3, 4); ``"5,6,7"`` -> (5, 6, 7); ``"0-2,7"`` mixes both.

    Given the data set's ``class_names``, names work too (exactly, else ignoring case), mixed
    with numbers: ``"Sandal,Shirt"`` is (5, 6) for Fashion-MNIST. When every class name is a
    number (folders named ``1``, ``2``, ``10``), numbers mean those names, not positions.

    >>> parse_classes("0-2,7")
    (0, 1, 2, 7)
    >>> parse_classes("Shirt,sandal", ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"))
    (6, 5)
    """
    if text is None or text.strip() in ("", "all"):
        return None
    classes = [c for part in text.split(",") for c in _class_part(part, text, class_names, where)]
    if len(set(classes)) != len(classes):
        raise DataError(f"classes {text!r} name a class twice")
    return tuple(classes)


def resolve_classes(
    classes: str | Sequence[int | str] | None, class_names: Sequence[str], where: str = "the data"
) -> tuple[int, ...] | None:
    """Class ids from ``--classes`` text, or from a sequence of ids and names."""
    if classes is None or isinstance(classes, str):
        return parse_classes(classes, class_names, where)
    return tuple(c if isinstance(c, int) else class_by_name(c, class_names, where) for c in classes)


def _class_part(part: str, text: str, names: Sequence[str] | None, where: str) -> list[int]:
    match = NUMBERS.fullmatch(part)
    if match:
        lo, hi = int(match[1]), int(match[2] if match[2] is not None else match[1])
        if hi < lo:
            raise DataError(f"class range {part.strip()!r} runs backwards; write {hi}-{lo}")
        return [_class_by_number(n, names, where) for n in range(lo, hi + 1)]
    token = part.strip()
    # A part without letters ("5-", "1;2") is a mistyped number, not a name.
    if names is None or not re.search(r"[^\W\d_]", token):
        raise DataError(f"cannot read classes {text!r}; write a range like 0-4, a list like 5,6,7 or class names like cat,dog")
    return [class_by_name(token, names, where)]


def _class_by_number(number: int, names: Sequence[str] | None, where: str) -> int:
    """A class id; folders named by numbers are meant by their names (``2`` is folder 2, not position 2)."""
    if not names or not all(n.isdigit() for n in names):
        return number
    by_value = {int(n): i for i, n in reversed(list(enumerate(names)))}
    if number not in by_value:
        raise DataError(
            f"class {number} not present in {where} (it has classes {_ranges(sorted(by_value))}); "
            "choose --classes among those"
        )
    return by_value[number]


def class_by_name(name: str, names: Sequence[str], where: str = "the data") -> int:
    """The id of the class called ``name``: exact match, else the one match ignoring case."""
    if name in names:
        return list(names).index(name)
    folded = [n.casefold() for n in names]
    if folded.count(name.casefold()) == 1:
        return folded.index(name.casefold())
    closest = difflib.get_close_matches(name.casefold(), folded, n=1, cutoff=0.0)
    hint = f"did you mean {names[folded.index(closest[0])]!r}? " if closest else ""
    shown = ", ".join(names[:SHOWN_NAMES]) + (f" and {len(names) - SHOWN_NAMES} more" if len(names) > SHOWN_NAMES else "")
    raise DataError(f"no class named {name!r} in {where}; {hint}its classes are {shown} (or numbers 0-{len(names) - 1})")


def select_classes(data: ImageSet, classes: tuple[int, ...], where: str) -> ImageSet:
    """Keep only ``classes`` and relabel them 0..C-1 in the order given."""
    present = set(torch.unique(data.y).tolist())
    check_present(classes, present, where, data.class_names)
    lookup = torch.full((max(present) + 1,), -1, dtype=torch.int64)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    keep = lookup[data.y] >= 0
    names = tuple(data.class_names[c] if c < len(data.class_names) else str(c) for c in classes)
    mask = None if data.mask is None else data.mask[keep]
    return replace(data, x=data.x[keep], y=lookup[data.y[keep]], class_names=names, mask=mask)


def check_present(classes: Sequence[int], present: Iterable[int], where: str, names: Sequence[str] = ()) -> None:
    """Every class asked for is among ``present``; else an error listing the ones there are, by name
    (with their numbers) where ``names`` (of every class id) are known."""
    present = sorted(set(present))
    absent = [c for c in classes if c not in present]
    if absent:
        named = [names[c] for c in present] if names and all(c < len(names) for c in present) else []
        there = classes_text(present, named) if named else _ranges(present)
        raise DataError(
            f"class {', '.join(map(str, absent))} not present in {where} "
            f"(it has classes {there}); choose --classes among those"
        )


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

    With ``shots``, the shots are drawn first (``shots`` per class) and validation takes
    ``val_per_class`` images of each class (default: 10%, at most 500) from the rest: the same
    seed draws the same shots whether a validation set is carved or not, so ``plan --shots N``
    (which carves one) and a study judged on the shots alone see one draw. Without ``shots``,
    validation is carved first and at most ``limit_per_class`` per class of the rest are kept.
    """
    g = torch.Generator().manual_seed(seed)
    sizes = {c: int((train.y == c).sum()) for c in range(len(train.class_names))}
    val_counts = {
        c: val_per_class if val_per_class is not None else min(max(1, round(VAL_FRACTION * n)), VAL_CAP_PER_CLASS)
        for c, n in sizes.items()
    }
    check_room(train.class_names, sizes, val_counts, shots, where)
    if shots is not None:
        picked, rest = per_class_split(train.y, {c: shots for c in sizes}, g)
        val_index, _ = per_class_split(train.y[rest], val_counts, g)
        return train.subset(picked), train.subset(rest[val_index])
    val_index, pool_index = per_class_split(train.y, val_counts, g)
    pool = train.subset(pool_index)
    if limit_per_class is not None:
        keep, _ = per_class_split(pool.y, {c: min(limit_per_class, sizes[c]) for c in sizes}, g)
        pool = pool.subset(keep)
    return pool, train.subset(val_index)


def check_room(names: Sequence[str], sizes: dict[int, int], val_counts: dict[int, int], shots: int | None,
               where: str) -> None:  # fmt: skip
    """Every class has room for its validation images and the shots (one image at least); the error
    names the fix that works: the most ``--shots`` every class allows, or the classes to keep."""
    if shots is not None and shots < 1:
        raise DataError(f"--shots must be at least 1, got {shots}")
    room = {c: sizes[c] - val_counts[c] for c in sizes}
    empty = [c for c in sizes if room[c] < 1]
    if empty:
        c = empty[0]
        raise DataError(
            f"{where}: class {names[c]!r} has {_images(sizes[c])}, {min(sizes[c], val_counts[c])} taken "
            f"for validation, none left to train on; {drop_hint(names, empty)}"
        )
    short = {c: n for c, n in room.items() if shots is not None and n < shots}
    if short:
        c = min(short, key=short.get)
        fewest = [k for k in short if short[k] == room[c]]
        alone = len(names) - len(fewest) >= 2  # the other classes still make a task
        raise DataError(
            f"asked for {shots} shots per class but {where} class {names[c]!r} has only {_images(room[c])} "
            f"after validation; use --shots {room[c]} (the most every class allows)"
            + (f", or {drop_hint(names, fewest)}" if alone else "")
        )


def _images(n: int) -> str:
    return f"{n} training image{'' if n == 1 else 's'}"


def drop_hint(names: Sequence[str], dropped: Sequence[int]) -> str:
    """``leave it out: --classes a,b,c`` (the chosen classes but ``dropped``, by name), or add images."""
    kept = [n for i, n in enumerate(names) if i not in set(dropped)]
    what = "it" if len(dropped) == 1 else "them"
    if len(kept) < 2:
        return f"add images to {', '.join(repr(names[c]) for c in dropped)}"
    return f"leave {what} out with --classes {','.join(kept)} (or add images to {what})"
