import numpy as np
import pytest
import torch
from PIL import Image

from paramreuse.data import load_split, load_task, parse_classes
from paramreuse.data.sources import DEBIAN_FASHION_MNIST, read_idx
from paramreuse.errors import DataError
from tests.conftest import write_idx


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_round_trip(tmp_path, compress):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3-ubyte", array, compress)
    assert np.array_equal(read_idx(path), array)


def test_read_idx_corrupt(tmp_path):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match="corrupt IDX"):
        read_idx(path)


@pytest.mark.parametrize(
    "text,expected",
    [("0-4", (0, 1, 2, 3, 4)), ("5,6,7", (5, 6, 7)), ("0-1,9", (0, 1, 9)), (None, None), ("all", None)],
)
def test_parse_classes(text, expected):
    assert parse_classes(text) == expected


@pytest.mark.parametrize("text", ["a-b", "4-1", "1,1", "1;2"])
def test_parse_classes_rejects(text):
    with pytest.raises(DataError):
        parse_classes(text)


def test_class_selection_remaps_labels(fake_fmnist):
    full = load_split("fashion-mnist", "train")
    task = load_task("fashion-mnist", "7,2,5", seed=0)
    assert task.classes == (7, 2, 5)
    assert set(task.train.y.tolist()) == {0, 1, 2}
    # every image labelled k must be an image of original class classes[k]
    for k, original in enumerate(task.classes):
        originals = full.x[full.y == original]
        mine = task.train.x[task.train.y == k]
        assert all((originals == img).flatten(1).all(1).any() for img in mine)
    assert task.train.class_names == ("Sneaker", "Pullover", "Sandal")


def test_shapes_and_splits(fake_fmnist):
    task = load_task("fashion-mnist", "0-4", seed=0)
    assert task.train.x.shape[1:] == (1, 28, 28)
    assert task.train.x.dtype == torch.float32
    assert -1.0 <= task.train.x.min() and task.train.x.max() <= 1.0
    assert len(task.val) == 5 * 6  # 10% of 60 per class
    assert len(task.train) == 5 * 54
    assert len(task.test) == 5 * 20


def test_shots_are_deterministic_in_the_seed(fake_fmnist):
    a = load_task("fashion-mnist", "0-4", shots=3, seed=1)
    b = load_task("fashion-mnist", "0-4", shots=3, seed=1)
    c = load_task("fashion-mnist", "0-4", shots=3, seed=2)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.train.x, c.train.x)
    assert torch.bincount(a.train.y).tolist() == [3] * 5


def test_shots_never_overlap_validation(fake_fmnist):
    task = load_task("fashion-mnist", "0-4", shots=10, seed=3)
    train_rows = {tuple(r.tolist()) for r in task.train.x.flatten(1)}
    assert not any(tuple(r.tolist()) in train_rows for r in task.val.x.flatten(1))


def test_more_shots_than_exist(fake_fmnist):
    with pytest.raises(DataError, match="has only 54 training images.*--shots 54"):
        load_task("fashion-mnist", "0-4", shots=100)


def test_class_not_present(fake_fmnist):
    with pytest.raises(DataError, match="class 12 not present"):
        load_task("fashion-mnist", "0-4,12")


def test_single_class_target(fake_fmnist):
    with pytest.raises(DataError, match="at least 2 classes"):
        load_task("fashion-mnist", "3")


def test_unknown_data_set():
    with pytest.raises(DataError, match="unknown data set 'mnist'"):
        load_task("mnist")


def test_missing_fashion_mnist(tmp_path, monkeypatch):
    from paramreuse.data import sources

    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setenv("PARAMREUSE_DATA", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        sources.find_fashion_mnist(download=False)


def test_debian_fashion_mnist_is_installed_and_complete():
    # make setup installs Debian's dataset-fashion-mnist; the demo depends on it.
    train = load_split("fashion-mnist", "train", data_dir=DEBIAN_FASHION_MNIST)
    test = load_split("fashion-mnist", "test", data_dir=DEBIAN_FASHION_MNIST)
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.y).tolist() == [6000] * 10


def test_digits_resized_with_fixed_test_split():
    task = load_task("digits", "0-9", shots=5, seed=0)
    assert task.train.x.shape == (50, 1, 28, 28)
    again = load_task("digits", "0-9", shots=5, seed=9)
    assert torch.equal(task.test.x, again.test.x)  # the test split does not move with the seed
    assert len(task.test) + len(load_split("digits", "train")) == 1797


def test_folder_layout(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    task = load_task(f"folder:{tmp_path}", seed=0, size=(16, 16), val_per_class=1)
    assert task.train.class_names == ("cat", "dog")
    assert task.train.x.shape[1:] == (3, 16, 16)
    assert len(task.train) + len(task.val) + len(task.test) == 16


def test_empty_folder(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_task(f"folder:{tmp_path}")


def test_the_shots_of_a_seed_do_not_depend_on_the_validation_carve(fake_fmnist):
    """plan --shots (a validation set carved) and a study judged on the shots alone see one draw; the
    validation images are never among the shots."""
    import torch

    from paramreuse.data import load_task

    alone = load_task("fashion-mnist", "5-9", shots=5, seed=3, val_per_class=0)
    for val in (None, 4):
        carved = load_task("fashion-mnist", "5-9", shots=5, seed=3, val_per_class=val)
        assert torch.equal(carved.train.x, alone.train.x) and torch.equal(carved.train.y, alone.train.y)
        assert len(carved.val) > 0
        shots = {tuple(x.flatten().tolist()) for x in carved.train.x}
        assert not any(tuple(x.flatten().tolist()) in shots for x in carved.val.x)
    other = load_task("fashion-mnist", "5-9", shots=5, seed=4, val_per_class=0)
    assert not torch.equal(other.train.x, alone.train.x)  # another seed, another draw
