"""Image folders (ImageFolder layout), read class by class.

Only the chosen classes' image files are opened: another class folder may hold files that do
not decode, or none at all, without stopping a run that leaves it out. Class ids are positions
among all class folders (sorted by name), so that they mean the same whichever classes are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from paramreuse.data.images import ImageRule, image_files, image_rule, images_tensor, peek, read_image, visible_dirs
from paramreuse.data.sources import DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION, ImageSet, stratified_holdout
from paramreuse.errors import DataError

Labelled = list[tuple[Path, int]]  # image files with their class ids


def folder_class_names(root: str | Path) -> tuple[str, ...]:
    """The class names of an image folder (its class folders, sorted), from the listing alone."""
    return tuple(_listing(Path(root))[0])


def load_folder(root: str | Path, split: str, size: tuple[int, int] | None = None,
                classes: Sequence[int] | None = None) -> ImageSet:  # fmt: skip
    """ImageFolder layout: ``root/CLASS/*.png``, or ``root/train/CLASS`` and ``root/test/CLASS``.

    Without train/ and test/ subfolders a fixed 25% of each class is held out as the test split
    (the same images whichever classes are read). Hidden folders and files (``.ipynb_checkpoints``,
    ``.DS_Store``, ``._NAME.png``) are skipped; train/ and test/ must hold the same classes.

    Args:
        classes: class ids to read (positions among the class folders); None reads them all.
            Only their files are opened. The images of these classes, both splits, decide one
            :func:`~paramreuse.data.images.image_rule` (size, grey or RGB), recorded in ``image_rule``.
    """
    root = Path(root)
    train, test = _listing(root)
    names = tuple(train)
    chosen = set(range(len(names)) if classes is None else classes)
    if test is not None:
        files = {"train": _labelled(train, chosen), "test": _labelled(test, chosen)}
    else:
        every = _labelled(train, set(range(len(names))))
        held = stratified_holdout(torch.tensor([c for _, c in every], dtype=torch.int64), DIGITS_TEST_FRACTION,
                                  DIGITS_SPLIT_SEED, at_least_one=True).tolist()  # fmt: skip
        files = {s: [(f, c) for (f, c), h in zip(every, held) if c in chosen and h == (s == "test")] for s in ("train", "test")}
    rule = image_rule([peek(f) for found in files.values() for f, _ in found], size)
    return _read(files[split], names, rule)


def _listing(root: Path) -> tuple[dict[str, list[Path]], dict[str, list[Path]] | None]:
    """Image files by class name of the train split, and of the test split (None without train/ and test/)."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check the path after folder:")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train, test = _class_files(root / "train"), _class_files(root / "test")
        _check_same_classes(root, train, test)
        return train, test
    return _class_files(root), None


def _labelled(files: dict[str, list[Path]], chosen: set[int]) -> Labelled:
    return [(f, c) for c, found in enumerate(files.values()) if c in chosen for f in found]


def _class_files(root: Path) -> dict[str, list[Path]]:
    """Image files of each class folder of ``root``, by class name in sorted order."""
    files = {d.name: image_files(d) for d in visible_dirs(root)}
    if not any(files.values()):
        raise DataError(f"{root}: no images found; expected {root}/CLASS_NAME/IMAGE.png for each class")
    return files  # an empty class folder is an error only when that class is chosen: check_class_folders


def check_class_folders(root: str | Path, class_names: Sequence[str]) -> None:
    """Each chosen class folder (of train/ and test/ where the folder has them) holds images."""
    root = Path(root)
    splits = [root / "train", root / "test"] if (root / "train").is_dir() and (root / "test").is_dir() else [root]
    for folder in (split / name for split in splits for name in class_names):
        if folder.is_dir() and not image_files(folder):
            raise DataError(
                f"{folder}: class folder holds no images (hidden and non-image files are skipped); "
                "add images to it or remove the folder"
            )


def _check_same_classes(root: Path, train: dict, test: dict) -> None:
    """Train and test must name the same classes: else class ids would mean different things."""
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    if only_train or only_test:
        differ = [f"only in {s}/: {', '.join(names)}" for s, names in (("train", only_train), ("test", only_test)) if names]
        raise DataError(
            f"{root}: train/ and test/ hold different classes ({'; '.join(differ)}); "
            "give both the same class folders"
        )


def _read(files: Labelled, names: tuple[str, ...], rule: ImageRule) -> ImageSet:
    x = images_tensor([read_image(f) for f, _ in files], rule)
    y = torch.tensor([c for _, c in files], dtype=torch.int64)
    return ImageSet(x, y, names, image_rule=rule.text)
