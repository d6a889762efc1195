"""Write scikit-learn's digits as an image folder, the layout people keep their own images in.

    python examples/digits_folder.py runs/digits

makes ``runs/digits/train/<digit>/<n>.png`` and ``runs/digits/test/<digit>/<n>.png`` (28x28
grey PNGs, a quarter of each digit's images in test/), ready for ``--data folder:runs/digits``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def write_folder(root: Path, size: int = 28) -> int:
    digits = load_digits()
    rng = np.random.default_rng(0)
    count = 0
    for label in range(10):
        members = rng.permutation(np.flatnonzero(digits.target == label))
        cut = len(members) // 4
        for split, chosen in (("test", members[:cut]), ("train", members[cut:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for i in chosen:
                pixels = (digits.images[i] * (255 / 16)).astype(np.uint8)
                Image.fromarray(pixels).resize((size, size), Image.BILINEAR).save(folder / f"{i}.png")
                count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/digits_folder.py OUT_FOLDER")
    n = write_folder(Path(sys.argv[1]))
    print(f"wrote {n} images to {sys.argv[1]}/train and {sys.argv[1]}/test")
