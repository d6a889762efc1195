"""Image files as people have them, read into one tensor by one stated rule.

The rule, decided over every image read of a data set (both splits, so that they agree; in an
image folder, the images of the chosen classes, the only files opened):

- **size**: the size asked for; else the most common size (ties: the larger); images of
  another size are resized to it with bilinear filtering (antialiased when shrinking);
- **mode**: grey (one channel) when every image is grey, else RGB (grey images repeated
  over R, G and B). Palette images count as grey when their palette is grey;
- **values**: 8-bit images are divided by 255, 16-bit ones (``I;16``, and ``I`` as 16-bit
  PNGs open) by 65535, so nothing is clipped; float images are taken as 0..1; transparent
  pixels are composited over white (as viewers show them), never left at their hidden colour.

:class:`ImageRule` records what was done, and its ``text`` is the sentence printed to the user.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from paramreuse.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Folders and files tools leave behind (.ipynb_checkpoints, .DS_Store, macOS "._NAME.png"
# resource forks, the __MACOSX folder of a zip) are neither classes nor images.
JUNK_NAMES = {"__MACOSX"}
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
SIXTEEN_BIT_MODES = {"I", "I;16", "I;16L", "I;16B", "I;16N"}


def is_hidden(path: Path) -> bool:
    return path.name.startswith(".") or path.name in JUNK_NAMES


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that are not hidden, sorted by name."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not is_hidden(d))


def image_files(folder: Path) -> list[Path]:
    """Image files of ``folder`` (by suffix) that are not hidden, sorted by name."""
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and not is_hidden(f) and f.is_file())


def read_image(path: Path):
    """The decoded PIL image at ``path``; a clear error when it is not one."""
    return _opened(path, _decoded)


def _decoded(im):
    im.load()
    return im.copy()


def _opened(path: Path, use):
    """``use(image)`` on the image at ``path``; a file that is no image is a clear error."""
    from PIL import Image, UnidentifiedImageError  # only image folders need it

    try:
        with Image.open(path) as im:
            return use(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise DataError(f"{path}: not a readable image; remove or replace it") from None


@dataclass(frozen=True)
class ImageHeader:
    """What the rule needs to know of one image, read without decoding its pixels."""

    size: tuple[int, int]  # (height, width)
    grey: bool
    sixteen_bit: bool
    palette: bool
    alpha: bool


def _is_grey(im) -> bool:
    if im.mode in ("P", "PA"):
        palette = np.asarray(im.getpalette() or [0, 0, 0]).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return im.mode in GREY_MODES


def header_of(im) -> ImageHeader:
    alpha = _has_alpha(im)
    return ImageHeader((im.height, im.width), _is_grey(im), im.mode in SIXTEEN_BIT_MODES, im.mode in ("P", "PA"), alpha)


def _has_alpha(im) -> bool:
    return bool({"A", "a"} & set(im.getbands())) or "transparency" in im.info


def peek(path: Path) -> ImageHeader:
    """Size and kind of the image at ``path``, from its header (the pixels are not decoded)."""
    return _opened(path, header_of)


@dataclass(frozen=True)
class ImageRule:
    """How a data set's images become one tensor: target size, grey or RGB, and why."""

    size: tuple[int, int]  # (height, width)
    grey: bool
    text: str

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3


def image_rule(headers: list[ImageHeader], size: tuple[int, int] | None = None) -> ImageRule:
    """The one rule for these images (all images read of a data set, every split)."""
    if not headers:
        raise DataError("no images to read")
    n = len(headers)
    counts = Counter(h.size for h in headers)
    target = tuple(size) if size else max(counts, key=lambda s: (counts[s], s[0] * s[1], s))
    grey = all(h.grey for h in headers)
    parts = [_size_text(target, counts, n, asked=bool(size)), _mode_text(grey, headers)]
    notes = [
        ("16-bit values divided by 65535", any(h.sixteen_bit for h in headers)),
        ("palette images expanded", any(h.palette for h in headers)),
        ("transparent pixels composited over white", any(h.alpha for h in headers)),
    ]
    parts += [note for note, present in notes if present]
    return ImageRule(target, grey, f"{n} images; " + "; ".join(parts))


def _size_text(target: tuple[int, int], counts: Counter, n: int, asked: bool) -> str:
    h, w = target
    other = n - counts.get(target, 0)
    if asked:
        return f"resized to {h}x{w} (HxW, as asked) with bilinear filtering"
    if not other:
        return f"all {h}x{w} (HxW)"
    return f"resized to the most common size {h}x{w} (HxW) with bilinear filtering ({other} of {n} had another size)"


def _mode_text(grey: bool, headers: list[ImageHeader]) -> str:
    if grey:
        return "grey (1 channel): every image is grey"
    colour = sum(not h.grey for h in headers)
    return f"RGB (3 channels): {colour} of {len(headers)} images are colour, so grey ones are repeated over R, G, B"


def unit_array(im) -> np.ndarray:
    """A PIL image as float32 (H, W, C) in [0, 1]: C = 1 for grey modes, else 3; alpha over white."""
    if im.mode in SIXTEEN_BIT_MODES:
        return np.clip(np.asarray(im, dtype=np.float32) / 65535.0, 0.0, 1.0)[..., None]
    if im.mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0.0, 1.0)[..., None]
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.float32)[..., None] / 255.0
    if im.mode in ("LA", "La"):
        return _over_white(np.asarray(im.convert("LA"), dtype=np.float32) / 255.0)
    # P keeps its transparency through RGBA; CMYK, YCbCr, ... become RGB.
    has_alpha = _has_alpha(im)
    array = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    return _over_white(array) if has_alpha else array


def _over_white(array: np.ndarray) -> np.ndarray:
    colour, alpha = array[..., :-1], array[..., -1:]
    return colour * alpha + (1.0 - alpha)


def images_tensor(images: list, rule: ImageRule) -> torch.Tensor:
    """PIL images as one (N, C, H, W) tensor in [-1, 1], following ``rule``."""
    x = torch.empty((len(images), rule.channels, *rule.size), dtype=torch.float32)
    for i, im in enumerate(images):
        x[i] = _to_rule(torch.from_numpy(unit_array(im)).permute(2, 0, 1), rule)
    return x.mul_(2.0).sub_(1.0)


def _to_rule(image: torch.Tensor, rule: ImageRule) -> torch.Tensor:
    """One (C, H, W) image in [0, 1] in the rule's channels and size."""
    if rule.grey and image.shape[0] == 3:
        image = image.mean(0, keepdim=True)  # a grey palette: R = G = B
    elif not rule.grey and image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    if tuple(image.shape[-2:]) != rule.size:
        image = F.interpolate(image[None], size=rule.size, mode="bilinear", align_corners=False, antialias=True)[0]
    return image
