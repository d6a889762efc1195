"""Image sources: Fashion-MNIST (IDX files, also as a segmentation set), scikit-learn digits,
and segmentation folders (images with masks); image folders are in ``folders.py``.

Every source returns an :class:`ImageSet` of float images scaled to [-1, 1] with the
source's own class ids (and, for segmentation, a label mask per image); class selection and
few-shot sampling live in ``sampling.py``.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import rgb_to_grayscale

from paramreuse.data.images import (  # noqa: F401 - IMAGE_SUFFIXES stays importable from here
    IMAGE_SUFFIXES,
    ImageRule,
    header_of,
    image_files,
    image_rule,
    images_tensor,
    read_image,
)  # fmt: skip
from paramreuse.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images ``x`` (N, C, H, W) in [-1, 1], labels ``y`` (N,), and the names of the labels.

    Segmentation sets also carry ``mask`` (N, H, W), one label per pixel, named by ``mask_names``
    (label 0 is the background). ``y`` then still says which class an image shows (one class for
    a plain segmentation folder), so class selection and few-shot sampling work unchanged.

    ``image_rule`` says how image files were made into ``x`` (size, grey or RGB, value range);
    empty for data sets stored as arrays.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    mask: torch.Tensor | None = None
    mask_names: tuple[str, ...] = ()
    image_rule: str = ""

    def __len__(self) -> int:
        return len(self.y)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])

    def subset(self, index: torch.Tensor) -> ImageSet:
        mask = None if self.mask is None else self.mask[index]
        return replace(self, x=self.x[index], y=self.y[index], mask=mask)


def to_unit_range(images: torch.Tensor, max_value: float) -> torch.Tensor:
    return images.float().div_(max_value / 2).sub_(1.0)


def resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def resize_mask(mask: torch.Tensor | None, size: tuple[int, int] | None) -> torch.Tensor | None:
    """Nearest-neighbour resize of (N, H, W) label masks: labels are never blended."""
    if mask is None or size is None or tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def resized(data: ImageSet, size: tuple[int, int] | None) -> ImageSet:
    return replace(data, x=resize(data.x, size), mask=resize_mask(data.mask, size))


CHANNEL_NAMES = {1: "grey", 3: "RGB"}


def with_channels(data: ImageSet, channels: int | None) -> ImageSet:
    """The images with ``channels`` colour channels (None: as they are): grey to RGB repeats the grey
    plane, RGB to grey is torchvision's luma (ITU-R 601), so either side of a pair can match the other."""
    if channels is None or channels == data.channels:
        return data
    if channels not in CHANNEL_NAMES or data.channels not in CHANNEL_NAMES:
        raise DataError(f"cannot convert {data.channels}-channel images to {channels} channels; "
                        "channels takes 1 (grey) or 3 (RGB)")  # fmt: skip
    x = data.x.repeat(1, 3, 1, 1) if channels == 3 else rgb_to_grayscale(data.x)
    rule = f"{data.image_rule}; " if data.image_rule else ""
    return replace(data, x=x, image_rule=f"{rule}converted to {CHANNEL_NAMES[channels]}")


# ---- Fashion-MNIST -------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array of its stored shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DataError(f"{path}: corrupt IDX file ({exc}); reinstall the data set") from None


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def fashion_mnist_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for Fashion-MNIST, in order."""
    dirs = [Path(d) for d in (data_dir, os.environ.get("PARAMREUSE_DATA")) if d]
    # A data dir may hold the files directly or in a fashion-mnist/ subfolder.
    dirs = [p for d in dirs for p in (d, d / "fashion-mnist")]
    return dirs + [DEBIAN_FASHION_MNIST, _download_root() / "FashionMNIST" / "raw"]


def _download_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "paramreuse"


def find_fashion_mnist(data_dir: str | Path | None = None, download: bool = True) -> Path:
    for folder in fashion_mnist_dirs(data_dir):
        if all(_idx_file(folder, stem) for pair in FASHION_MNIST_FILES.values() for stem in pair):
            return folder
    if download:
        try:
            import torchvision  # heavy: only a download needs it

            torchvision.datasets.FashionMNIST(str(_download_root()), download=True)
            return find_fashion_mnist(data_dir, download=False)
        except Exception:  # noqa: BLE001, S110 - any failure to download means "not available"
            pass
    searched = ", ".join(str(d) for d in fashion_mnist_dirs(data_dir)[:-1])
    raise DataError(
        f"Fashion-MNIST not found (searched {searched}; download failed); "
        "run 'apt-get install -y dataset-fashion-mnist' or set PARAMREUSE_DATA to a folder with the IDX files"
    )


@lru_cache(maxsize=4)
def _fashion_mnist_arrays(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    image_stem, label_stem = FASHION_MNIST_FILES[split]
    images = read_idx(_idx_file(folder, image_stem))
    labels = read_idx(_idx_file(folder, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{folder}: Fashion-MNIST {split} images and labels do not match; reinstall the data set")
    return images, labels


def load_fashion_mnist(split: str, data_dir: str | Path | None = None) -> ImageSet:
    images, labels = _fashion_mnist_arrays(find_fashion_mnist(data_dir), split)
    x = to_unit_range(torch.from_numpy(images.copy()).unsqueeze(1), 255.0)
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)), FASHION_MNIST_CLASSES)


SILHOUETTE_THRESHOLD = 10  # of 255: the background of Fashion-MNIST is (nearly) 0


@lru_cache(maxsize=4)
def _silhouettes(folder: Path, split: str) -> np.ndarray:
    """The garment silhouette of every image: pixels above the threshold, holes filled."""
    from scipy.ndimage import binary_fill_holes  # only this data set needs it

    images, _ = _fashion_mnist_arrays(folder, split)
    per_image = np.zeros((3, 3, 3), dtype=bool)
    per_image[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # fill within each image, never across images
    return binary_fill_holes(images > SILHOUETTE_THRESHOLD, structure=per_image)


def load_fashion_mnist_seg(split: str, data_dir: str | Path | None = None) -> ImageSet:
    """Fashion-MNIST with a binary mask per image: 1 on the garment's silhouette, 0 elsewhere."""
    folder = find_fashion_mnist(data_dir)
    images = load_fashion_mnist(split, data_dir)
    mask = torch.from_numpy(_silhouettes(folder, split).astype(np.int64))
    return ImageSet(images.x, images.y, images.class_names, mask, ("background", "garment"))


# ---- scikit-learn digits ----------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0  # fixed: the test split must not move with the user's seed


def load_digits(split: str, size: tuple[int, int] | None = (28, 28)) -> ImageSet:
    """scikit-learn's 8x8 digits, resized; a fixed 25% stratified test split."""
    from sklearn.datasets import load_digits as sk_load_digits  # heavy: only this data set needs it

    bunch = sk_load_digits()
    x = to_unit_range(torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1), 16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    test = stratified_holdout(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    index = test if split == "test" else ~test
    return ImageSet(resize(x[index], size), y[index], tuple(str(d) for d in range(10)))


def stratified_holdout(y: torch.Tensor, fraction: float, seed: int, at_least_one: bool = False) -> torch.Tensor:
    """Boolean mask selecting ``fraction`` of each class, deterministic in ``seed``.

    ``at_least_one``: a class of two or more images gives at least one (a tiny folder class
    would otherwise have no test image, and its test split would lack the class).
    """
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        count = round(fraction * len(members))
        count = max(count, 1) if at_least_one and len(members) > 1 else count
        chosen = members[torch.randperm(len(members), generator=g)[:count]]
        mask[chosen] = True
    return mask


# ---- segmentation folders: images/ + masks/ ---------------------------------------------


def load_segfolder(root: str | Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    """``root/images/NAME.png`` with ``root/masks/NAME.png`` (matched by file stem), or the same
    under ``root/train`` and ``root/test``. Without those a fixed 25% is held out as the test split.

    A mask holds one label per pixel (0 = background, 1, 2, ...); a mask of only 0 and 255 is
    read as binary. Masks must have their image's size; images follow the folder's one
    :func:`~paramreuse.data.images.image_rule` (masks resized nearest). Hidden files are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"segmentation folder {root} does not exist; check the path after segfolder:")
    if (root / "train").is_dir() and (root / "test").is_dir():
        roots = (root / "train", root / "test")
        return _read_segfolder(root / split, _segfolder_rule(roots, size), _mask_label_count(*roots))
    full = _read_segfolder(root, _segfolder_rule((root,), size), _mask_label_count(root))
    test = stratified_holdout(full.y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return full.subset(test if split == "test" else ~test)


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"{root}: no {d.name}/ folder; a segmentation folder holds images/ and masks/ side by side")
    images = {f.stem: f for f in image_files(images_dir)}
    masks = {f.stem: f for f in image_files(masks_dir)}
    if not images:
        raise DataError(f"{images_dir}: no images found; put NAME.png files there and their masks in {masks_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{masks_dir}: no mask for {len(missing)} image(s) ({shown}); add NAME.png masks with the images' names")
    return [(images[k], masks[k]) for k in sorted(images)]


def _mask_array(path: Path) -> np.ndarray:
    im = read_image(path)
    if im.mode not in ("L", "P", "1", "I", "I;16"):
        im = im.convert("L")
    mask = np.asarray(im).astype(np.int64)
    if set(np.unique(mask).tolist()) <= {0, 255}:
        mask = (mask > 0).astype(np.int64)
    return mask


MAX_MASK_LABELS = 64


@lru_cache(maxsize=4)
def _segfolder_files(root: Path) -> tuple[tuple, tuple[np.ndarray, ...], tuple[Path, ...]]:
    """Every image of ``root``, its mask as labels, and the mask's path: each file read once."""
    images, masks, mask_paths = [], [], []
    for image_path, mask_path in _pairs(root):
        im, mask = read_image(image_path), _mask_array(mask_path)
        if mask.shape != (im.size[1], im.size[0]):
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {im.size[0]}x{im.size[1]}; "
                "masks must have their image's size"
            )
        images.append(im)
        masks.append(mask)
        mask_paths.append(mask_path)
    return tuple(images), tuple(masks), tuple(mask_paths)


def _segfolder_rule(roots: tuple[Path, ...], size: tuple[int, int] | None) -> ImageRule:
    """One rule over the images of every split, so that both splits have one size and mode."""
    return image_rule([header_of(im) for root in roots for im in _segfolder_files(root)[0]], size)


def _mask_label_count(*roots: Path) -> int:
    """Labels 0..K-1 over every mask of the folder(s), so that both splits agree on K."""
    top, where = max((int(m.max()), path) for root in roots for m, path in zip(*_segfolder_files(root)[1:]))
    if top >= MAX_MASK_LABELS:
        raise DataError(
            f"{where}: mask label {top} is too large (at most {MAX_MASK_LABELS - 1}); "
            "save masks as label images (0 = background, 1, 2, ...) or as binary 0/255"
        )
    return max(top + 1, 2)


def _read_segfolder(root: Path, rule: ImageRule, labels: int) -> ImageSet:
    images, masks, _ = _segfolder_files(root)
    x = images_tensor(list(images), rule)
    mask = torch.cat([resize_mask(torch.from_numpy(m)[None], rule.size) for m in masks])
    names = ("background", *(str(k) for k in range(1, labels)))
    return ImageSet(x, torch.zeros(len(images), dtype=torch.int64), ("image",), mask, names, rule.text)
