"""Data sets by name, class selection and few-shot sampling.

``--data`` names: ``fashion-mnist``, ``digits``, ``folder:PATH`` (classification, or
reconstruction of the images), ``fashion-mnist-seg`` (garment silhouette masks),
``fashion-mnist-seg-multi`` (each silhouette labelled with its class) and ``segfolder:PATH``
(images/ + masks/) for segmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from paramreuse.data.folders import check_class_folders, folder_class_names, load_folder
from paramreuse.data.sampling import carve, check_present, drop_hint, parse_classes, resolve_classes, select_classes
from paramreuse.data.sources import (
    ImageSet,
    load_digits,
    load_fashion_mnist,
    load_fashion_mnist_seg,
    load_segfolder,
    resized,
    with_channels,
)
from paramreuse.errors import DataError
from paramreuse.tasks import CLASSIFICATION, SEGMENTATION, Task, get_task

DATA_NAMES = ("fashion-mnist", "digits", "folder:PATH", "fashion-mnist-seg", "fashion-mnist-seg-multi", "segfolder:PATH")
MULTI_SUFFIX = "-multi"


def is_segmentation_data(name: str) -> bool:
    return name.startswith("segfolder:") or name in ("fashion-mnist-seg", "fashion-mnist-seg" + MULTI_SUFFIX)


def default_task(name: str) -> Task:
    """Segmentation for data with masks, else classification (reconstruction is asked for by name)."""
    return SEGMENTATION if is_segmentation_data(name) else CLASSIFICATION


def task_for(name: str, task: str | None = None) -> Task:
    """The task named by ``task``, or the data's default when None."""
    return get_task(task) if task else default_task(name)


@dataclass(frozen=True, eq=False)
class TaskData:
    """Train (possibly few-shot), validation and test sets of one task, labels 0..C-1."""

    name: str
    classes: tuple[int, ...]
    train: ImageSet
    val: ImageSet
    test: ImageSet
    kind: Task = CLASSIFICATION

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_outputs(self) -> int:
        """Output channels a model needs: classes, mask labels, or image channels."""
        return self.kind.out_channels(self)

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def size(self) -> tuple[int, int]:
        return self.train.size

    @property
    def image_rule(self) -> str:
        """How image files became tensors (size, grey or RGB, value range); empty for array data."""
        return self.train.image_rule

    def describe(self) -> dict:
        """What the task holds; ``images`` (the image rule) only for data read from image files."""
        return {
            "data": self.name,
            "classes": list(self.classes),
            "class_names": list(self.train.class_names),
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            **({"images": self.image_rule} if self.image_rule else {}),
            **({} if self.kind is CLASSIFICATION else {"task": self.kind.name, "loss": self.kind.loss_name,
                                                       "outputs": self.num_outputs}),
        }


def load_split(name: str, split: str, data_dir: str | Path | None = None, size=None,
               classes: Sequence[int] | None = None) -> ImageSet:  # fmt: skip
    """The images of one split of the named data set, with the source's class ids.

    ``classes``: an image folder reads only these classes' files (ids among its class folders);
    other data sets are arrays, read whole.
    """
    if name == "fashion-mnist":
        return resized(load_fashion_mnist(split, data_dir), size)
    if name in ("fashion-mnist-seg", "fashion-mnist-seg" + MULTI_SUFFIX):
        return resized(load_fashion_mnist_seg(split, data_dir), size)
    if name == "digits":
        return load_digits(split, size or (28, 28))
    if name.startswith("folder:"):
        return load_folder(name.removeprefix("folder:"), split, size, classes)
    if name.startswith("segfolder:"):
        return load_segfolder(name.removeprefix("segfolder:"), split, size)
    raise DataError(f"unknown data set {name!r}; use one of {', '.join(DATA_NAMES)}")


def load_task(
    name: str,
    classes: str | Sequence[int | str] | None = None,
    shots: int | None = None,
    seed: int = 0,
    limit_per_class: int | None = None,
    val_per_class: int | None = None,
    test_per_class: int | None = None,
    data_dir: str | Path | None = None,
    size: int | tuple[int, int] | None = None,
    task: str | None = None,
    channels: int | None = None,
) -> TaskData:
    """Load a task: select classes, carve validation, sample shots.

    Args:
        name: data set name (see ``DATA_NAMES``).
        classes: ``"0-4"``, ``"5,6,7"``, class names (``"Sandal,Shirt"``, ``"cat,dog"``), a
            tuple of class ids or names, or None for all.
        shots: training images per class (few-shot); None keeps all (or ``limit_per_class``).
        seed: drives the validation carve and the shot sample.
        test_per_class: evaluate on at most this many test images per class (fixed subset).
        size: resize images (and masks) to ``(height, width)``; an int ``s`` means ``(s, s)``.
        task: ``classification``, ``segmentation``, ``segmentation-dice`` or ``reconstruction``;
            default: segmentation for data with masks, else classification.
        channels: convert the images to 1 (grey) or 3 (RGB) channels; None keeps them.
    """
    kind = task_for(name, task)
    size = (size, size) if isinstance(size, int) else size
    folder = name.removeprefix("folder:") if name.startswith("folder:") else None
    # Names resolve against the data's own class names: a folder's from its listing (no image is
    # opened before the classes are known), another data set's once it is read.
    train_all = None if folder else load_split(name, "train", data_dir, size)
    names = folder_class_names(folder) if folder else train_all.class_names
    classes = resolve_classes(classes, names, name)
    if classes is None:  # every class folder, an empty one too (checked below)
        classes = tuple(range(len(names))) if folder else tuple(sorted(set(train_all.y.tolist())))
    check_present(classes, range(len(names)) if folder else train_all.y.unique().tolist(), name, names)
    _check_two_classes(name, classes, names, kind)
    if folder:  # only the chosen classes' folders must hold images, and only theirs are read
        check_class_folders(folder, [names[c] for c in classes])
        train_all = load_split(name, "train", data_dir, size, classes)
    if kind.name == "segmentation" and train_all.mask is None:
        raise DataError(f"{name} has no masks for segmentation; use fashion-mnist-seg, fashion-mnist-seg-multi or segfolder:PATH")
    train = with_channels(_labelled(select_classes(train_all, classes, name), name), channels)
    test = load_split(name, "test", data_dir, size, classes)
    # A class with no test image cannot be judged at any --shots: the one error that names the fix.
    _check_tested(name, classes, names, set(test.y.unique().tolist()))
    train, val = carve(train, seed, shots, limit_per_class, val_per_class, where=name)
    test = with_channels(_labelled(select_classes(test, classes, f"{name} (test split)"), name), channels)
    if test_per_class is not None:
        test, _ = carve(test, 0, limit_per_class=test_per_class, val_per_class=0, where=f"{name} (test split)")
    return TaskData(name, classes, train, val, test, kind)


def _check_tested(name: str, classes: tuple[int, ...], names: Sequence[str], present: set[int]) -> None:
    """Every chosen class has a test image; else leave it out (by name) or add images."""
    untested = [i for i, c in enumerate(classes) if c not in present]
    if untested:
        chosen = [names[c] if c < len(names) else str(c) for c in classes]
        raise DataError(
            f"{name}: class {chosen[untested[0]]!r} has no test image (too few images to hold one out for "
            f"testing); {drop_hint(chosen, untested)}"
        )


def _check_two_classes(name: str, classes: tuple[int, ...], names: Sequence[str], kind: Task) -> None:
    """A classification target needs two classes; the error names the ones it got."""
    if len(classes) >= 2 or kind is not CLASSIFICATION:
        return
    got = ", ".join(f"{names[c]!r} ({c})" if c < len(names) else str(c) for c in classes)
    if len(names) < 2:
        raise DataError(f"{name} has a single class, {got}; a classification target needs at least 2 classes: "
                        "add another class folder")
    raise DataError(f"a classification target needs at least 2 classes, got only {got or 'none'}; widen --classes")


def _labelled(data: ImageSet, name: str) -> ImageSet:
    return _labelled_by_class(data) if name.endswith(MULTI_SUFFIX) else data


def _labelled_by_class(data: ImageSet) -> ImageSet:
    """Each silhouette takes its image's class: label 1 + the class's position in ``classes``."""
    mask = data.mask * (data.y[:, None, None] + 1)
    return replace(data, mask=mask, mask_names=("background", *data.class_names))


__all__ = ["DATA_NAMES", "ImageSet", "TaskData", "default_task", "load_split", "load_task", "parse_classes",
           "select_classes", "task_for"]
