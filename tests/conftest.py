"""Shared fixtures: a tiny Fashion-MNIST-shaped data set written as IDX files, tiny models."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

TINY_ARCH = "builtin:cnn?width=4"


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def class_images(labels: np.ndarray, rng: np.random.Generator, noise: int = 60) -> np.ndarray:
    """28x28 images whose bright stripe position encodes the class, plus noise: learnable in a few steps."""
    images = rng.integers(0, noise, size=(len(labels), 28, 28))
    for i, c in enumerate(labels):
        images[i, 2 * c + 4 : 2 * c + 7, 4:24] = 230
    return images


def stripe_rows(label: int) -> slice:
    """Rows of the bright stripe of a class-``label`` fake image (columns 4..23): its silhouette."""
    return slice(2 * label + 4, 2 * label + 7)


def make_fake_fashion_mnist(folder: Path, train_per_class: int = 60, test_per_class: int = 20, noise: int = 60) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, compress in (("train", train_per_class, True), ("t10k", test_per_class, False)):
        labels = np.repeat(np.arange(10), n)
        rng.shuffle(labels)
        write_idx(folder / f"{split}-images-idx3-ubyte", class_images(labels, rng, noise), compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
    return folder


@pytest.fixture(scope="session")
def fake_fmnist_dir(tmp_path_factory) -> Path:
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="session")
def fake_seg_dir(tmp_path_factory) -> Path:
    """Fake Fashion-MNIST whose background stays below the silhouette threshold: the mask is the stripe."""
    return make_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist-seg"), train_per_class=40, test_per_class=10, noise=8)


@pytest.fixture
def fake_fmnist(fake_fmnist_dir, monkeypatch) -> Path:
    """Point PARAMREUSE_DATA at the tiny data set for the duration of a test."""
    monkeypatch.setenv("PARAMREUSE_DATA", str(fake_fmnist_dir))
    return fake_fmnist_dir


def synthetic_set(n: int, seed: int = 0, num_classes: int = 5):
    """An in-memory ImageSet of the stripe images, labels 0..num_classes-1."""
    import torch

    from paramreuse.data import ImageSet

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    x = torch.from_numpy(class_images(labels, rng).astype(np.float32)).unsqueeze(1) / 127.5 - 1
    return ImageSet(x, torch.from_numpy(labels.astype(np.int64)), tuple(str(c) for c in range(num_classes)))


@pytest.fixture(scope="session")
def trained_pair():
    """Tiny CNNs S and T trained on the stripe task from different seeds (independent lineage)."""
    import torch

    from paramreuse.models import build_model
    from paramreuse.training.loop import TrainConfig, train

    data = synthetic_set(300, seed=1)
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(TINY_ARCH, 1, 5)
        train(model, data, TrainConfig(epochs=10, batch_size=32, lr=1e-2), seed=seed)
        models.append(model.eval())
    return models[0], models[1]


@pytest.fixture(scope="session", autouse=True)
def one_job_at_a_time():
    """Verbs run their jobs in the test's own process unless a test asks for workers (--jobs, ProcessExecutor):
    worker processes would cost each CLI test their start-up."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARAMREUSE_JOBS", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def own_core_budget(tmp_path_factory):
    """The suite's processes share a core budget of their own: the user's other runs on this machine never make a
    test wait for a core (nor the tests them)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PARAMREUSE_CORES_DIR", str(tmp_path_factory.mktemp("cores")))
        yield


def untimed(obj):
    """A result without its compute timings (the only values that differ between equal runs)."""
    if isinstance(obj, dict):
        return {k: untimed(v) for k, v in obj.items() if k not in ("seconds", "plan_seconds", "candidate_seconds")}
    return [untimed(v) for v in obj] if isinstance(obj, list) else obj
