"""Image sources: Fashion-MNIST (IDX files, also as a segmentation set), scikit-learn digits,
image folders, and segmentation folders (images with masks).

Every source returns an :class:`ImageSet` of float images scaled to [-1, 1] with the
source's own class ids (and, for segmentation, a label mask per image); class selection and
few-shot sampling live in ``sampling.py``.
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
    """Images ``x`` (N, C, H, W) in [-1, 1], labels ``y`` (N,), and the names of the labels.

    Segmentation sets also carry ``mask`` (N, H, W), one label per pixel, named by ``mask_names``
    (label 0 is the background). ``y`` then still says which class an image shows (one class for
    a plain segmentation folder), so class selection and few-shot sampling work unchanged.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: tuple[str, ...]
    mask: torch.Tensor | None = None
    mask_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.y)

    @property
    def channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.x.shape[2]), int(self.x.shape[3])

    def subset(self, index: torch.Tensor) -> "ImageSet":
        mask = None if self.mask is None else self.mask[index]
        return ImageSet(self.x[index], self.y[index], self.class_names, mask, self.mask_names)


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
    return ImageSet(resize(data.x, size), data.y, data.class_names, resize_mask(data.mask, size), data.mask_names)


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


SILHOUETTE_THRESHOLD = 10  # of 255: the background of Fashion-MNIST is (nearly) 0


@lru_cache(maxsize=4)
def _silhouettes(folder: Path, split: str) -> np.ndarray:
    """The garment silhouette of every image: pixels above the threshold, holes filled."""
    from scipy.ndimage import binary_fill_holes

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
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    files = [(i, f) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"{root}: no images found; expected {root}/CLASS_NAME/IMAGE.png for each class")
    x = _images_tensor([_read_image(f) for _, f in files], size)
    y = torch.tensor([i for i, _ in files], dtype=torch.int64)
    return ImageSet(x, y, tuple(d.name for d in class_dirs))


def _read_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.copy()
    except (UnidentifiedImageError, OSError):
        raise DataError(f"{path}: not a readable image; remove or replace it") from None


def _images_tensor(images: list, size: tuple[int, int] | None) -> torch.Tensor:
    """PIL images as one (N, C, H, W) tensor in [-1, 1]: grey when all are grey, else RGB; resized to ``size``."""
    mode = "L" if all(im.mode in ("L", "1", "I;16", "I") for im in images) else "RGB"
    size = size or images[0].size[::-1]
    x = torch.from_numpy(np.stack([np.asarray(im.convert(mode).resize(size[::-1]), dtype=np.uint8) for im in images]))
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
    return to_unit_range(x.contiguous(), 255.0)


# ---- segmentation folders: images/ + masks/ ---------------------------------------------


def load_segfolder(root: str | Path, split: str, size: tuple[int, int] | None = None) -> ImageSet:
    """``root/images/NAME.png`` with ``root/masks/NAME.png`` (matched by file stem), or the same
    under ``root/train`` and ``root/test``. Without those a fixed 25% is held out as the test split.

    A mask holds one label per pixel (0 = background, 1, 2, ...); a mask of only 0 and 255 is
    read as binary. Masks must have their image's size; ``size`` resizes both (masks nearest).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"segmentation folder {root} does not exist; check the path after segfolder:")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _read_segfolder(root / split, size, _mask_label_count(root / "train", root / "test"))
    full = _read_segfolder(root, size, _mask_label_count(root))
    test = _stratified_holdout(full.y, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    return full.subset(test if split == "test" else ~test)


def _pairs(root: Path) -> list[tuple[Path, Path]]:
    images_dir, masks_dir = root / "images", root / "masks"
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise DataError(f"{root}: no {d.name}/ folder; a segmentation folder holds images/ and masks/ side by side")
    images = {f.stem: f for f in sorted(images_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES}
    masks = {f.stem: f for f in sorted(masks_dir.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES}
    if not images:
        raise DataError(f"{images_dir}: no images found; put NAME.png files there and their masks in {masks_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{masks_dir}: no mask for {len(missing)} image(s) ({shown}); add NAME.png masks with the images' names")
    return [(images[k], masks[k]) for k in sorted(images)]


def _mask_array(path: Path) -> np.ndarray:
    im = _read_image(path)
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
        im, mask = _read_image(image_path), _mask_array(mask_path)
        if mask.shape != (im.size[1], im.size[0]):
            raise DataError(
                f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {im.size[0]}x{im.size[1]}; "
                "masks must have their image's size"
            )
        images.append(im)
        masks.append(mask)
        mask_paths.append(mask_path)
    return tuple(images), tuple(masks), tuple(mask_paths)


def _mask_label_count(*roots: Path) -> int:
    """Labels 0..K-1 over every mask of the folder(s), so that both splits agree on K."""
    top, where = max((int(m.max()), path) for root in roots for m, path in zip(*_segfolder_files(root)[1:]))
    if top >= MAX_MASK_LABELS:
        raise DataError(
            f"{where}: mask label {top} is too large (at most {MAX_MASK_LABELS - 1}); "
            "save masks as label images (0 = background, 1, 2, ...) or as binary 0/255"
        )
    return max(top + 1, 2)


def _read_segfolder(root: Path, size: tuple[int, int] | None, labels: int) -> ImageSet:
    images, masks, _ = _segfolder_files(root)
    sizes = {im.size for im in images}
    if size is None and len(sizes) > 1:
        raise DataError(f"{root}: images have {len(sizes)} different sizes; set size (e.g. --size 64) to resize them")
    x = _images_tensor(list(images), size)
    mask = torch.cat([resize_mask(torch.from_numpy(m)[None], x.shape[-2:]) for m in masks])
    names = ("background", *(str(k) for k in range(1, labels)))
    return ImageSet(x, torch.zeros(len(images), dtype=torch.int64), ("image",), mask, names)
