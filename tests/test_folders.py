"""Image folders as people have them: hidden files, mismatched splits, 16-bit, palette and
transparent images, mixed sizes and modes, class names in --classes, tiny classes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.data import load_task, parse_classes
from paramreuse.data.images import unit_array
from paramreuse.errors import DataError
from paramreuse.models import read_info
from tests.conftest import TINY_ARCH
from tests.test_segmentation import write_segfolder

runner = CliRunner()


def grey_images(folder: Path, n: int = 6, size=(12, 10), seed: int = 0, start: int = 0) -> Path:
    """``n`` random grey PNGs of ``size`` (HxW) named start.png, start+1.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def class_folder(root: Path, classes=("cat", "dog"), n: int = 6, size=(12, 10)) -> Path:
    for k, c in enumerate(classes):
        grey_images(root / c, n, size, seed=k)
    return root


def train_test_folder(root: Path, train=("cat", "dog"), test=("cat", "dog"), n: int = 6) -> Path:
    class_folder(root / "train", train, n)
    class_folder(root / "test", test, n)
    return root


def cli(*args: str):
    return runner.invoke(app, ["train", "--arch", TINY_ARCH, "--epochs", "1", "--min-steps", "1", "--device", "cpu", *args])


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# ---- train/ and test/ must name the same classes ----------------------------------------


def test_train_and_test_with_different_classes_is_an_error_naming_them(tmp_path):
    root = train_test_folder(tmp_path / "pets", train=("cat", "dog", "fox"), test=("cat", "dog", "owl"))
    with pytest.raises(DataError, match=r"train/ and test/ hold different classes \(only in train/: fox; only in test/: owl\)"):
        load_task(f"folder:{root}", val_per_class=1)


def test_train_and_test_mismatch_exits_2_with_one_line(tmp_path):
    root = train_test_folder(tmp_path / "pets", train=("cat", "dog", "fox"), test=("cat", "dog"))
    line = one_error_line(cli("--data", f"folder:{root}", "--out", str(tmp_path / "out")))
    assert "only in train/: fox" in line and "only in test/" not in line


def test_matching_splits_keep_one_class_order(tmp_path):
    root = train_test_folder(tmp_path / "pets", train=("dog", "cat"), test=("cat", "dog"))
    task = load_task(f"folder:{root}", val_per_class=1)
    assert task.train.class_names == ("cat", "dog") and task.test.class_names == ("cat", "dog")
    assert torch.bincount(task.test.y).tolist() == [6, 6]


# ---- hidden folders and files -------------------------------------------------------------


def test_hidden_folders_are_not_classes_and_hidden_files_not_images(tmp_path):
    root = class_folder(tmp_path / "pets")
    grey_images(root / ".ipynb_checkpoints", 6)  # would be a third class
    grey_images(root / "__MACOSX" / "cat", 2)
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    task = load_task(f"folder:{root}", val_per_class=1)
    assert task.train.class_names == ("cat", "dog")
    assert len(task.train) + len(task.val) + len(task.test) == 12


def test_segfolder_skips_hidden_files(tmp_path):
    root = write_segfolder(tmp_path / "seg")
    (root / "images" / "._img00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "masks" / "._img00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "masks" / ".hidden.png").write_bytes(b"not a mask")
    data = load_task(f"segfolder:{root}", val_per_class=2)
    assert len(data.train) + len(data.val) + len(data.test) == 12


def test_empty_class_folder_is_named(tmp_path):
    root = class_folder(tmp_path / "pets")
    (root / "owl").mkdir()
    (root / "owl" / "notes.txt").write_text("no images yet")
    with pytest.raises(DataError, match=r"owl: class folder holds no images"):
        load_task(f"folder:{root}")


def test_empty_class_folder_not_chosen_does_not_block_the_chosen_ones(tmp_path):
    """Issue 21: an empty train/ten blocks neither --classes five,six nor its own class being left out."""
    root = train_test_folder(tmp_path / "n", train=("five", "six"), test=("five", "six", "ten"))
    (root / "train" / "ten").mkdir()
    task = load_task(f"folder:{root}", "five,six", val_per_class=1)
    assert task.train.class_names == ("five", "six")
    with pytest.raises(DataError, match=r"train/ten: class folder holds no images"):
        load_task(f"folder:{root}", "five,ten", val_per_class=1)


@pytest.mark.parametrize("layout", ["flat", "train_test"])
def test_only_the_chosen_classes_files_are_opened(tmp_path, monkeypatch, layout):
    """Issue 21: --classes five,six opens five/ and six/ only; seven/'s undecodable file breaks nothing."""
    root = class_folder(tmp_path / "n", ("five", "seven", "six")) if layout == "flat" else \
        train_test_folder(tmp_path / "n", train=("five", "seven", "six"), test=("five", "seven", "six"))
    for seven in root.rglob("seven"):
        (seven / "broken.png").write_bytes(b"not a png")
    opened, real_open = [], Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(Path(fp)) or real_open(fp, *a, **k))
    task = load_task(f"folder:{root}", "five,six", val_per_class=1)
    assert task.classes == (0, 2) and task.train.class_names == ("five", "six")
    assert opened and {p.parent.name for p in opened} == {"five", "six"}
    with pytest.raises(DataError, match=r"seven/broken.png: not a readable image"):
        load_task(f"folder:{root}", "five,seven", val_per_class=1)
    if layout == "flat":  # the held-out test images are those of reading every class
        monkeypatch.setattr(Image, "open", real_open)
        (root / "seven" / "broken.png").write_bytes((root / "seven" / "0.png").read_bytes())
        every = load_task(f"folder:{root}", val_per_class=1)
        assert torch.equal(every.test.x[every.test.y != 1], task.test.x)


def test_too_few_classes_are_named_by_name(tmp_path):
    root = class_folder(tmp_path / "n", ("five", "six"))
    with pytest.raises(DataError, match=r"got only 'five' \(0\); widen --classes"):
        load_task(f"folder:{root}", "five")
    one = class_folder(tmp_path / "one", ("five",))
    line = one_error_line(cli("--data", f"folder:{one}", "--out", str(tmp_path / "out")))
    assert "has a single class, 'five' (0); a classification target needs at least 2 classes: add another" in line


# ---- 16-bit, palette and transparent images -----------------------------------------------


def single_image_folder(root: Path, image: Image.Image, copies: int = 4) -> Path:
    """Two classes, each with ``copies`` copies of ``image``."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(copies):
            image.save(root / c / f"{i}.png")
    return root


def all_pixels(task) -> torch.Tensor:
    return torch.cat([task.train.x, task.val.x, task.test.x])


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16).repeat(2, axis=0)
    root = single_image_folder(tmp_path / "deep", Image.fromarray(values))
    assert Image.open(root / "a" / "0.png").mode.startswith("I")
    task = load_task(f"folder:{root}", val_per_class=1)
    expected = torch.from_numpy(values / 65535.0 * 2 - 1).float()
    assert task.channels == 1
    assert torch.allclose(all_pixels(task)[:, 0], expected.expand(8, -1, -1), atol=1e-5)
    assert "16-bit values divided by 65535" in task.describe()["images"]


def test_32_bit_integer_mode_reads_as_16_bit():
    values = np.array([[0, 32768, 65535]], dtype=np.int32)
    array = unit_array(Image.fromarray(values))
    assert np.allclose(array[..., 0], values / 65535.0)


def test_grey_palette_image_stays_grey_with_its_levels(tmp_path):
    levels = np.array([[0, 85, 170, 255]], dtype=np.uint8).repeat(3, axis=0)
    palette = Image.fromarray(levels).convert("P")
    assert palette.mode == "P"
    task = load_task(f"folder:{single_image_folder(tmp_path / 'pal', palette)}", val_per_class=1)
    assert task.channels == 1
    assert torch.allclose(all_pixels(task)[0, 0], torch.from_numpy(levels / 255.0 * 2 - 1).float(), atol=1e-5)


def test_colour_palette_image_keeps_its_colours(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1], rgb[1, 0], rgb[1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    task = load_task(f"folder:{single_image_folder(tmp_path / 'pal', palette)}", val_per_class=1)
    assert task.channels == 3
    assert torch.allclose(all_pixels(task)[0], torch.from_numpy(rgb / 255.0 * 2 - 1).permute(2, 0, 1).float(), atol=1e-5)


def test_transparent_pixels_are_white_and_grey_alpha_stays_grey(tmp_path):
    la = np.zeros((2, 2, 2), dtype=np.uint8)
    la[0, 0] = (0, 255)  # opaque black
    la[1, 1] = (0, 0)  # fully transparent: white, as viewers show it
    la[0, 1] = (0, 128)  # half transparent black over white: mid grey
    task = load_task(f"folder:{single_image_folder(tmp_path / 'la', Image.fromarray(la, 'LA'))}", val_per_class=1)
    assert task.channels == 1
    x = (all_pixels(task)[0, 0] + 1) / 2
    assert x[0, 0] == pytest.approx(0.0, abs=1e-5) and x[1, 1] == pytest.approx(1.0, abs=1e-5)
    assert x[0, 1] == pytest.approx(1 - 128 / 255, abs=1e-5)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)
    task = load_task(f"folder:{single_image_folder(tmp_path / 'rgba', Image.fromarray(rgba, 'RGBA'))}", val_per_class=1)
    x = (all_pixels(task)[0] + 1) / 2
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0])) and torch.allclose(x[:, 1, 1], torch.ones(3))
    assert "transparent pixels composited over white" in task.image_rule


# ---- mixed sizes and modes: one rule, recorded --------------------------------------------


def test_mixed_sizes_go_to_the_most_common_size_not_the_first_files(tmp_path):
    root = class_folder(tmp_path / "pets", n=5, size=(12, 10))
    Image.fromarray(np.full((30, 20), 200, dtype=np.uint8)).save(root / "cat" / "0.png")  # sorts first
    task = load_task(f"folder:{root}", val_per_class=1)
    assert task.size == (12, 10) and task.test.size == (12, 10)
    rule = task.describe()["images"]
    assert "resized to the most common size 12x10 (HxW) with bilinear filtering (1 of 10 had another size)" in rule
    assert "grey (1 channel)" in rule


def test_both_splits_follow_one_size_and_mode(tmp_path):
    root = train_test_folder(tmp_path / "pets")
    for c in ("cat", "dog"):  # the test split alone: other size, and colour
        for i in range(6):
            Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / "test" / c / f"{i}.png")
    task = load_task(f"folder:{root}", val_per_class=1)
    assert task.test.x.shape[1:] == task.train.x.shape[1:] == (3, 12, 10)
    assert "RGB (3 channels): 12 of 24 images are colour" in task.image_rule
    grey = (task.train.x[0] + 1) / 2
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])  # grey repeated over R, G, B


def test_asked_size_is_stated(tmp_path):
    task = load_task(f"folder:{class_folder(tmp_path / 'pets')}", val_per_class=1, size=16)
    assert task.size == (16, 16) and "resized to 16x16 (HxW, as asked)" in task.image_rule


def test_segfolder_mixed_sizes_follow_the_rule_with_masks_nearest(tmp_path):
    root = write_segfolder(tmp_path / "seg")
    Image.fromarray(np.zeros((24, 32), dtype=np.uint8)).save(root / "images" / "img00.png")
    mask = np.zeros((24, 32), dtype=np.uint8)
    mask[4:20, 6:18] = 255
    Image.fromarray(mask).save(root / "masks" / "img00.png")
    data = load_task(f"segfolder:{root}", val_per_class=2)
    assert data.size == (12, 16) and data.test.size == (12, 16)
    masks = torch.cat([data.train.mask, data.val.mask, data.test.mask])
    assert masks.shape[1:] == (12, 16) and set(masks.unique().tolist()) == {0, 1}
    assert "most common size 12x16" in data.describe()["images"]


def test_array_data_describe_has_no_image_rule(fake_fmnist):
    task = load_task("fashion-mnist", "0-1", seed=0)
    assert "images" not in task.describe() and task.image_rule == ""


def test_train_json_records_the_rule(tmp_path):
    root = class_folder(tmp_path / "pets")
    result = cli("--data", f"folder:{root}", "--format", "json", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "train.json").read_text())
    assert record["data"]["images"].startswith("12 images; all 12x10 (HxW); grey (1 channel)")


def test_train_names_the_classes_in_its_output_and_checkpoint(tmp_path):
    """Issue 21: the human output says "classes owl, cat (2, 0)", not "classes [2, 0]"; the checkpoint records the names."""
    root = class_folder(tmp_path / "pets", ("cat", "dog", "owl"))
    result = cli("--data", f"folder:{root}", "--classes", "owl,cat", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "classes owl, cat (2, 0)" in " ".join(result.stdout.split())
    info = read_info(tmp_path / "out" / "model.safetensors")
    assert info.classes == (2, 0) and info.class_names == ("owl", "cat")


# ---- --classes by name ----------------------------------------------------------------------


def test_folder_classes_by_name_in_the_order_given(tmp_path):
    root = class_folder(tmp_path / "pets", ("cat", "dog", "fox"))
    task = load_task(f"folder:{root}", "fox,Cat", val_per_class=1)
    assert task.classes == (2, 0) and task.train.class_names == ("fox", "cat")
    assert task.test.class_names == ("fox", "cat") and set(task.test.y.tolist()) == {0, 1}
    assert load_task(f"folder:{root}", ("dog", 2), val_per_class=1).classes == (1, 2)


def test_fashion_mnist_classes_by_name_and_numbers_still_work(fake_fmnist):
    named = load_task("fashion-mnist", "Sandal,Shirt", seed=0)
    numbered = load_task("fashion-mnist", "5,6", seed=0)
    assert named.classes == numbered.classes == (5, 6)
    assert named.train.class_names == ("Sandal", "Shirt") and torch.equal(named.train.x, numbered.train.x)
    assert load_task("fashion-mnist", "T-shirt/top,Ankle boot,7-8", seed=0).classes == (0, 9, 7, 8)


def test_unknown_class_name_names_the_closest(fake_fmnist, tmp_path):
    with pytest.raises(DataError, match=r"no class named 'Sandle' in fashion-mnist; did you mean 'Sandal'\?"):
        load_task("fashion-mnist", "Sandle,Shirt")
    root = class_folder(tmp_path / "pets")
    line = one_error_line(cli("--data", f"folder:{root}", "--classes", "cat,dgo", "--out", str(tmp_path / "out")))
    assert "no class named 'dgo'" in line and "did you mean 'dog'?" in line


def test_numbers_mean_folder_names_when_folders_are_numbered(tmp_path):
    root = class_folder(tmp_path / "digits", ("1", "2", "10"))  # sorted: 1, 10, 2
    task = load_task(f"folder:{root}", "2,10", val_per_class=1)
    assert task.train.class_names == ("2", "10")
    with pytest.raises(DataError, match=r"class 3 not present in .* \(it has classes 1,2,10\)"):
        load_task(f"folder:{root}", "1-3", val_per_class=1)


@pytest.mark.parametrize("text", ["5-", "1;2", "cat"])
def test_text_that_is_no_class_list_still_fails_without_names(text):
    with pytest.raises(DataError, match="cannot read classes"):
        parse_classes(text)


# ---- tiny classes ---------------------------------------------------------------------------


def test_tiny_class_error_says_found_and_needed(tmp_path):
    root = train_test_folder(tmp_path / "pets")
    for f in sorted((root / "train" / "dog").iterdir())[1:]:
        f.unlink()
    with pytest.raises(DataError, match=r"class 'dog' has 1 training image, 1 taken for validation, none left to train on; add images to 'dog'"):
        load_task(f"folder:{root}")
    with pytest.raises(DataError, match=r"class 'cat' has 6 training images, 6 taken for validation, none left"):
        load_task(f"folder:{train_test_folder(tmp_path / 'more')}", "cat,dog", shots=5, val_per_class=6)


def _suggested(line: str, flag: str) -> list[str]:
    """The option an error line suggests (``--classes cat,dog``, ``--shots 4``), as arguments."""
    match = re.search(rf"{flag} (\S+?)[,;)]?(?: |$)", line)
    assert match, line
    return [flag, match[1]]


def test_tiny_class_in_a_flat_folder_names_the_classes_to_keep_and_that_works(tmp_path):
    root = class_folder(tmp_path / "pets")
    grey_images(root / "owl", 2)  # one held out for test, one left: no room for validation
    line = one_error_line(cli("--data", f"folder:{root}", "--out", str(tmp_path / "out")))
    assert "class 'owl' has 1 training image, 1 taken for validation, none left to train on; leave it out" in line
    fix = _suggested(line, "--classes")
    assert fix == ["--classes", "cat,dog"]
    assert cli("--data", f"folder:{root}", *fix, "--out", str(tmp_path / "out")).exit_code == 0


def test_a_class_of_one_image_has_no_test_image_and_the_message_leads_to_a_run(tmp_path):
    """The dead end of a class with one image: no test split for it, whatever --shots; one message names the fix."""
    root = class_folder(tmp_path / "pets", ("cat", "dog", "fox"))
    grey_images(root / "owl", 1)
    for shots in ("3", "1"):
        line = one_error_line(cli("--data", f"folder:{root}", "--shots", shots, "--out", str(tmp_path / "out")))
        assert "class 'owl' has no test image" in line and "--shots" not in line, line
    fix = _suggested(line, "--classes")
    assert fix == ["--classes", "cat,dog,fox"]
    assert cli("--data", f"folder:{root}", "--shots", "1", *fix, "--out", str(tmp_path / "out")).exit_code == 0


def test_too_many_shots_names_the_most_every_class_allows_and_that_works(tmp_path):
    root = class_folder(tmp_path / "pets", ("cat", "dog", "fox"))  # 6 each: 2 test, 1 validation, 3 to train on
    line = one_error_line(cli("--data", f"folder:{root}", "--shots", "5", "--out", str(tmp_path / "out")))
    fix = _suggested(line, "--shots")
    assert fix == ["--shots", "3"], line
    assert cli("--data", f"folder:{root}", *fix, "--out", str(tmp_path / "out")).exit_code == 0
