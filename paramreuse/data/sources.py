"""Image sources: Fashion-MNIST (IDX files), scikit-learn digits, and image folders.

Every source returns an :class:`ImageSet` of float images scaled to [-1, 1] with the
source's own class ids; class selection and few-shot sampling live in ``sampling.py``.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images ``x`` (N, C, H, W) in [-1, 1], labels ``y`` (N,), and the names of the labels."""

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.y)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.x[index], self.y[index], self.class_names)


def to_unit_range(images: torch.Tensor, max_value: float) -> torch.Tensor:
    return images.float().div_(max_value / 2).sub_(1.0)


def resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


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
            import torchvision

            torchvision.datasets.FashionMNIST(str(_download_root()), download=True)
            return find_fashion_mnist(data_dir, download=False)
        except Exception:  # noqa: BLE001 - any failure to download means "not available"
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


# ---- scikit-learn digits ----------------------------------------------------------------

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0  # fixed: the test split must not move with the user's seed


def load_digits(split: str, size: tuple[int, int] | None = (28, 28)) -> ImageSet:
    """scikit-learn's 8x8 digits, resized; a fixed 25% stratified test split."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = to_unit_range(torch.from_numpy(bunch.images.astype(np.float32)).unsqueeze(1), 16.0)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    test = _stratified_holdout(y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    index = test if split == "test" else ~test
    return ImageSet(resize(x[index], size), y[index], tuple(str(d) for d in range(10)))


def _stratified_holdout(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask selecting ``fraction`` of each class, deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y):
        members = torch.nonzero(y == c).flatten()
        chosen = members[torch.randperm(len(members), generator=g)[: round(fraction * len(members))]]
        mask[chosen] = True
    return mask


# ---- image folders ----------------------------------------------------------------------


def load_folder(root: str | Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    """ImageFolder layout: ``root/CLASS/*.png``, or ``root/train/CLASS`` and ``root/test/CLASS``.

    Without train/ and test/ subfolders a fixed 25% of each class is held out as the test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; check the path after folder:")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _read_class_folders(root / split, size)
    full = _read_class_folders(root, size)
    test = _stratified_holdout(full.y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return full.subset(test if split == "test" else ~test)


def _read_class_folders(root: Path, size: tuple[int, int] | None) -> ImageSet:
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = [(i, f) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images found; expected {root}/CLASS_NAME/IMAGE.png for each class")
    images = []
    for _, f in files:
        try:
            with Image.open(f) as im:
                images.append(im.copy())
        except (UnidentifiedImageError, OSError):
            raise DataError(f"{f}: not a readable image; remove or replace it") from None
    mode = "L" if all(im.mode in ("L", "1", "I;16", "I") for im in images) else "RGB"
    size = size or images[0].size[::-1]
    arrays = [np.asarray(im.convert(mode).resize(size[::-1]), dtype=np.uint8) for im in images]
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
    y = torch.tensor([i for i, _ in files], dtype=torch.int64)
    return ImageSet(to_unit_range(x.contiguous(), 255.0), y, tuple(d.name for d in class_dirs))
