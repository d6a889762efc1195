"""Bad input through the CLI: every case exits 2 with one clear line, never a traceback.

The table here is the one in docs/reliability.md; tests/test_cli.py covers further train and
replace cases (unknown data set, --shots 500 on train, bad --params, unpaired models).
"""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.models import ModelInfo, build_model, save_checkpoint
from paramreuse.transfer.grid import RUNS_LOG
from tests.conftest import TINY_ARCH
from tests.test_byo_models import hf_cache, torch_home  # noqa: F401 - fixtures: empty weight caches
from tests.test_folders import class_folder, grey_images, train_test_folder
from tests.test_reuse import make_plan
from tests.test_segmentation import write_segfolder

runner = CliRunner()
TRAIN = ["train", "--arch", TINY_ARCH, "--epochs", "1", "--device", "cpu", "--quiet"]


class CreatesFile:
    """A pickle payload that, if ever unpickled, creates the file named in ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _checkpoint(path: Path, arch: str = TINY_ARCH, channels: int = 1, mutate=None, plain: bool = False) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, channels, 5)
    if mutate is not None:
        with torch.no_grad():
            mutate(model)
    if plain:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    else:
        save_checkpoint(path, model, ModelInfo(arch=arch, in_channels=channels, num_classes=5))
    return path


def _image_folder(root: Path, classes: str, suffix: str = ".png", channels: int = 3, valid: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(8):
            if valid:
                shape = (28, 28, channels) if channels == 3 else (28, 28)
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / c / f"{i}{suffix}")
            else:
                (root / c / f"{i}{suffix}").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> SimpleNamespace:
    """Every bad file the table needs, made once."""
    d = tmp_path_factory.mktemp("bad")
    f = SimpleNamespace(dir=d)
    f.good = _checkpoint(d / "good.safetensors")
    f.rgb_model = _checkpoint(d / "rgb.safetensors", channels=3)
    f.plain = _checkpoint(d / "plain.safetensors", plain=True)
    f.nan = _checkpoint(d / "nan.safetensors", mutate=lambda m: m.head.weight.__setitem__((0, 0), float("nan")))
    f.inf = _checkpoint(d / "inf.safetensors", mutate=lambda m: m.features[0][0].weight.fill_(float("inf")))
    torch.manual_seed(0)
    wide = build_model("builtin:cnn?width=8", 1, 5)  # tensors of width 8, recorded as width 4
    f.shape = save_checkpoint(d / "shape.safetensors", wide, ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    state = {k: v.contiguous() for k, v in build_model(TINY_ARCH, 1, 5).state_dict().items()}
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, d / "keys.safetensors")
    f.keys = d / "keys.safetensors"
    f.corrupt_st = d / "corrupt.safetensors"
    f.corrupt_st.write_bytes(b"\x10\x00\x00")
    f.trunc_st = d / "trunc.safetensors"
    f.trunc_st.write_bytes(f.good.read_bytes()[: f.good.stat().st_size // 2])
    torch.save(build_model(TINY_ARCH, 1, 5).state_dict(), d / "whole.pt")
    f.trunc_pt = d / "trunc.pt"
    f.trunc_pt.write_bytes((d / "whole.pt").read_bytes()[: (d / "whole.pt").stat().st_size // 2])
    f.pwned = d / "pwned"
    f.evil = d / "evil.pt"
    torch.save({"weight": CreatesFile(f.pwned)}, f.evil)
    f.unknown_format = d / "model.ckpt"
    f.unknown_format.write_bytes(b"\x00")
    f.empty = d / "empty"
    (f.empty / "a").mkdir(parents=True)
    f.text = _image_folder(d / "text", "ab", suffix=".txt", valid=False)
    f.broken = _image_folder(d / "broken", "ab", valid=False)
    f.rgb = _image_folder(d / "rgb", "ab")
    f.gray = _image_folder(d / "gray", "ab", channels=1)
    f.blocker = d / "blocker"
    f.blocker.write_text("a file where a folder should be")
    f.config = d / "typo.toml"
    f.config.write_text('[sweep]\nparam = ["unit"]\n')
    f.nowhere = d / "nowhere.safetensors"
    f.config_type = d / "type.toml"
    f.config_type.write_text("[transfer]\nshots = 5\n")
    for name, text in CONFIGS.items():  # choices and ranges the config dataclasses check when built
        (d / f"{name}.toml").write_text(text)
    f.bad_plan = d / "plan.json"
    f.bad_plan.write_text("{not json")
    f.seg_missing = write_segfolder(d / "seg_missing")
    (f.seg_missing / "masks" / "img05.png").unlink()
    f.seg_size = write_segfolder(d / "seg_size")
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(f.seg_size / "masks" / "img02.png")
    f.seg_labels = write_segfolder(d / "seg_labels", labels=(0, 100, 200))
    f.seg_nomasks = d / "seg_nomasks"
    (f.seg_nomasks / "images").mkdir(parents=True)
    f.split_mismatch = train_test_folder(d / "split_mismatch", train=("cat", "dog", "fox"), test=("cat", "dog", "owl"))
    f.empty_class = class_folder(d / "empty_class")
    (f.empty_class / "owl").mkdir()
    (f.empty_class / "owl" / "notes.txt").write_text("no images yet")
    f.tiny = class_folder(d / "tiny")
    grey_images(f.tiny / "owl", 2)  # one held out for test, one left: no room for validation
    f.lonely = class_folder(d / "lonely")
    grey_images(f.lonely / "owl", 1)  # its one image trains: no test image at any --shots
    f.numbered = class_folder(d / "numbered", ("1", "2", "10"))
    f.overwritten = d / "overwritten.safetensors"
    data = bytearray(f.good.read_bytes())
    data[-64:-48] = b"\xff" * 16  # inside the last tensor's bytes: the header still parses
    f.overwritten.write_bytes(bytes(data))
    f.nan_plain = _checkpoint(d / "nan_plain.safetensors", plain=True,
                              mutate=lambda m: m.head.weight.__setitem__((0, 0), float("nan")))  # fmt: skip
    f.five_six = class_folder(d / "five_six", ("five", "six"))
    (f.five_six / "ten").mkdir()  # empty, and not chosen: no error of its own
    f.one_class = class_folder(d / "one_class", ("five",))
    f.wide = _checkpoint(d / "wide.safetensors", arch="builtin:cnn?width=8")
    f.unet_plan = d / "unet_plan.json"
    f.unet_plan.write_text(json.dumps(make_plan(build_model("builtin:unet?width=4", 1, 2), {}).to_dict()))
    f.not_plan = d / "not_plan.json"
    f.not_plan.write_text(json.dumps({"metric": "accuracy"}))
    return f


def _compare(s: str, t: str, *extra: str):
    return lambda f: ["compare", str(getattr(f, s)), str(getattr(f, t)), "--quiet", *extra]


def _replace(*extra: str):
    return lambda f: ["replace", str(f.good), str(f.good), "--data", "fashion-mnist", "--device", "cpu", "--quiet", *extra]


def _train(*extra: str):
    return lambda f: [*TRAIN, *(e.format(**vars(f)) for e in extra)]


def _seg(*extra: str, arch: str = "builtin:unet?width=4"):
    return lambda f: ["train", "--arch", arch, "--epochs", "1", "--device", "cpu", "--quiet",
                      *(e.format(**vars(f)) for e in extra)]  # fmt: skip


def _corrupt_idx(f) -> list[str]:
    folder = f.dir / "idx"
    folder.mkdir(exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x01\x02")
    return [*TRAIN, "--data-dir", str(folder)]


CONFIGS = {
    "params": '[sweep]\nparams = ["conv.weights"]\n',
    "strategy": '[transfer]\nstrategies = ["plan", "lpft"]\n',
    "optimizer": '[training.fewshot]\noptimizer = "adamw"\n',
    "schedule": '[training.source]\nschedule = "cosin"\n',
    "tolerance": "[thresholds]\nlayer_tolerance = -0.02\n",
    "length": "[training]\nepochs = 2\nsteps = 40\n",
}


def _apply(plan: str, *extra: str):
    return lambda f: ["apply", str(getattr(f, plan)), "--source", str(f.good), "--data", "fashion-mnist", "--device", "cpu",
                      *extra]  # fmt: skip


def _config(name: str):
    return lambda f: ["study", "--config", str(f.dir / f"{name}.toml")]


# (case, argv builder, the part of the one line that must appear)
CASES = [
    ("unknown architecture", _compare("plain", "plain", "--arch", "builtin:nope"), "unknown builtin architecture 'nope'; available: cnn"),
    ("unknown architecture kind", _train("--arch", "keras:vgg16"), "unknown architecture kind 'keras'"),
    ("plain state dict without --arch", _compare("plain", "good"), "is a plain state dict; say which architecture it is with --arch SPEC"),
    ("missing and unexpected tensors", _compare("keys", "good", "--arch", TINY_ARCH), "does not fit the architecture: missing head.bias; unexpected extra.weight; use a checkpoint of the same architecture"),
    ("differently shaped tensors", _compare("shape", "good"), "shape mismatch features.0.0.weight (8, 1, 3, 3) vs model (4, 1, 3, 3)"),
    ("corrupt safetensors", _compare("corrupt_st", "good"), "not a readable safetensors file"),
    ("truncated safetensors", _compare("good", "trunc_st"), "not a readable safetensors file"),
    ("truncated .pt", _compare("trunc_pt", "good", "--arch", TINY_ARCH), "corrupt or truncated .pt file"),
    ("pickle that runs code", _compare("evil", "good", "--arch", TINY_ARCH), "refused to load: the file holds more than tensors (Trying to load unsupported GLOBAL"),
    ("unknown checkpoint format", _compare("unknown_format", "good", "--arch", TINY_ARCH), "unknown checkpoint format; use .safetensors (preferred) or .pt"),
    ("checkpoint does not exist", _compare("good", "nowhere", "--arch", TINY_ARCH), "nowhere.safetensors does not exist; check the path"),
    ("NaN weights", _compare("nan", "good"), "NaN or Inf values in head.weight; the model diverged, retrain it"),
    ("Inf weights", _compare("good", "inf"), "NaN or Inf values in features.0.0.weight"),
    ("empty data folder", _train("--data", "folder:{empty}"), "no images found; expected"),
    ("folder without images", _train("--data", "folder:{text}"), "no images found; expected"),
    ("unreadable image", _train("--data", "folder:{broken}"), "not a readable image; remove or replace it"),
    ("data folder does not exist", _train("--data", "folder:{dir}/nope"), "does not exist; check the path after folder:"),
    ("corrupt IDX data", _corrupt_idx, "corrupt IDX file (unpack requires a buffer of 4 bytes); reinstall the data set"),
    ("class not present", _replace("--classes", "5-9,12"), "class 12 not present in fashion-mnist (it has classes T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot (0-9)); choose --classes among those"),
    ("class not present in a folder", _train("--data", "folder:{rgb}", "--classes", "0-2"), "(it has classes a, b (0, 1)); choose --classes among those"),
    ("more shots than exist", _replace("--classes", "5-9", "--shots", "500"), "has only 54 training images after validation; use --shots 54 (the most every class allows)"),
    ("zero shots", _train("--shots", "0"), "--shots must be at least 1, got 0"),
    ("single-class target", _replace("--classes", "7"), "a classification target needs at least 2 classes, got only 'Sneaker' (7); widen --classes"),
    ("backwards class range", _train("--classes", "4-1"), "class range '4-1' runs backwards; write 1-4"),
    ("--init 1-channel model into 3-channel data", _train("--data", "folder:{rgb}", "--init", "{good}"), "takes 1-channel images but the data has 3 channels; use a checkpoint trained on 3-channel images"),
    ("--init 3-channel model into 1-channel data", _train("--data", "folder:{gray}", "--init", "{rgb_model}"), "takes 3-channel images but the data has 1 channels"),
    ("compare models with different input channels", _compare("good", "rgb_model"), "source and target do not pair, 1 difference(s), source vs target: features.0.0.weight (4, 1, 3, 3) vs (4, 3, 3, 3)"),
    ("unwritable output folder", lambda f: ["compare", str(f.good), str(f.good), "--out", str(f.blocker / "run")], "choose a writable --out folder"),
    ("config key that does not exist", lambda f: ["study", "--config", str(f.config)], "sweep: unknown key 'param'; did you mean 'params'?"),
    ("config value of the wrong type", lambda f: ["study", "--config", str(f.config_type)], "transfer.shots must be a list, e.g. [5], got 5"),
    ("config file missing", lambda f: ["study", "--config", str(f.dir / "nope.toml")], "nope.toml does not exist"),
    ("plan file not JSON", lambda f: ["transfer", str(f.good), "--plan", str(f.bad_plan), "--data", "fashion-mnist"], "is not valid JSON"),
    ("report of a folder without results", lambda f: ["report", str(f.empty)], "empty has no results.json; pass the --out folder of a finished `paramreuse study`"),
    ("unknown alignment", _compare("good", "good", "--align", "magic"), "unknown alignment 'magic'; use auto, none, weights, activations"),
    ("masks missing for some images", _seg("--data", "segfolder:{seg_missing}"), "masks: no mask for 1 image(s) (img05); add NAME.png masks with the images' names"),
    ("mask of the wrong size", _seg("--data", "segfolder:{seg_size}"), "img02.png: mask is 8x8 but its image is 16x12; masks must have their image's size"),
    ("mask labels out of range", _seg("--data", "segfolder:{seg_labels}"), "mask label 200 is too large (at most 63); save masks as label images (0 = background, 1, 2, ...) or as binary 0/255"),
    ("segmentation folder without masks/", _seg("--data", "segfolder:{seg_nomasks}"), "no masks/ folder; a segmentation folder holds images/ and masks/ side by side"),
    ("segmentation asked for on data without masks", _seg("--data", "fashion-mnist", "--task", "segmentation"), "fashion-mnist has no masks for segmentation; use fashion-mnist-seg, fashion-mnist-seg-multi or segfolder:PATH"),
    ("classification network on segmentation data", _seg("--data", "fashion-mnist-seg", "--shots", "2", arch=TINY_ARCH), "gives outputs of shape (2, 2) but segmentation on fashion-mnist-seg needs (2, 2, 28, 28); use a segmentation architecture such as builtin:unet"),
    ("images the network cannot take", _seg("--data", "fashion-mnist-seg", "--shots", "2", arch="smp:PSPNet/resnet18"), "smp:PSPNet/resnet18 cannot take 1x28x28 images (Wrong input shape height=28, width=28. Expected image height and width divisible by 8"),
    ("CUDA asked for on a machine without it", _train("--device", "cuda"), "no CUDA device is available; use --device auto or cpu"),
    ("train/ and test/ with different classes", _train("--data", "folder:{split_mismatch}"), "split_mismatch: train/ and test/ hold different classes (only in train/: fox; only in test/: owl); give both the same class folders"),
    ("class folder without images", _train("--data", "folder:{empty_class}"), "empty_class/owl: class folder holds no images (hidden and non-image files are skipped); add images to it or remove the folder"),
    ("class too small for validation and training", _train("--data", "folder:{tiny}"), "class 'owl' has 1 training image, 1 taken for validation, none left to train on; leave it out with --classes cat,dog (or add images to it)"),
    ("unknown class name", _train("--data", "fashion-mnist", "--classes", "Sandle,Shirt"), "no class named 'Sandle' in fashion-mnist; did you mean 'Sandal'? its classes are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot (or numbers 0-9)"),
    ("torchvision weights not in the cache", _train("--arch", "torchvision:mobilenet_v3_small?weights=DEFAULT"), "no cached weights at {torch_home}/mobilenet_v3_small-047dcff4.pth; nothing is downloaded. Put the file there (download https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth), or set TORCH_HOME"),
    ("timm tag whose weights are not cached (never random weights)", _train("--arch", "timm:resnet18.a1_in1k"), "timm:resnet18.a1_in1k: no cached weights (looked for {hf_cache}/models--timm--resnet18.a1_in1k/snapshots/*/model.safetensors"),
    ("unknown weights name", _train("--arch", "torchvision:resnet18?weights=IMAGENET9"), "'torchvision:resnet18?weights=IMAGENET9': no weights 'IMAGENET9'; use DEFAULT or one of IMAGENET1K_V1, DEFAULT"),
    ("architecture without weights given as a model", lambda f: ["compare", "torchvision:resnet18", str(f.good)], "torchvision:resnet18 names an architecture but no weights; add ?weights=DEFAULT (torchvision) or ?pretrained=true (timm), or pass a checkpoint file"),
    ("bad --input-size", _compare("plain", "plain", "--arch", TINY_ARCH, "--input-size", "big"), "--input-size takes N or H,W in pixels, e.g. 32 or 24,40, got 'big'"),
    ("config: unknown parameter group", _config("params"), "params.toml.sweep: params: unknown value 'conv.weights'; did you mean 'conv.weight'? use one of conv.weight, conv.bias, bn.weight, bn.bias, bn.stats, unit"),
    ("config: unknown strategy", _config("strategy"), "strategy.toml.transfer: strategies: unknown value 'lpft'; did you mean 'lp-ft'?"),
    ("config: unknown optimizer", _config("optimizer"), "optimizer.toml.training.fewshot: optimizer: unknown value 'adamw'; did you mean 'adam'? use one of adam, sgd"),
    ("config: unknown schedule", _config("schedule"), "schedule.toml.training.source: schedule: unknown value 'cosin'; did you mean 'cosine'? use one of cosine, constant"),
    ("config: negative tolerance", _config("tolerance"), "tolerance.toml.thresholds: layer_tolerance must be >= 0 (a drop in metric units), got -0.02"),
    ("number that names no numbered folder", _train("--data", "folder:{numbered}", "--classes", "1-3"), "(it has classes 1,2,10); choose --classes among those"),
    ("one class chosen from a folder", _train("--data", "folder:{five_six}", "--classes", "five"), "a classification target needs at least 2 classes, got only 'five' (0); widen --classes"),
    ("folder with a single class", _train("--data", "folder:{one_class}"), "has a single class, 'five' (0); a classification target needs at least 2 classes: add another class folder"),
    ("bytes overwritten inside a checkpoint", _compare("overwritten", "good"), "overwritten.safetensors is corrupted (its tensors do not read back as written: their SHA-256 differs from the one saved with them); re-save or re-download it"),
    ("NaN weights in a file without a checksum", _compare("nan_plain", "good", "--arch", TINY_ARCH), "NaN or Inf values in head.weight; the model diverged, or the file is damaged (it records no checksum to tell): retrain it, or re-save or re-download it"),
    ("one --shots value more than exist", lambda f: ["transfer", str(f.good), "--data", "fashion-mnist", "--classes", "5-9", "--shots", "5,500", "--seeds", "2", "--strategies", "scratch", "--device", "cpu"], "asked for 500 shots per class but fashion-mnist class 'Sandal' has only 60 training images after validation; use --shots 60 (the most every class allows)"),
    ("study error, progress bar on", lambda f: ["study", "--quick", "--classes", "7", "--device", "cpu"], "a classification target needs at least 2 classes, got only 'Sneaker' (7); widen --classes"),
    ("zero epochs", _train("--epochs", "0"), "--epochs must be at least 1, got 0"),
    ("both --epochs and --steps", lambda f: ["study", "--epochs", "2", "--steps", "40"], "--epochs 2 and --steps 40 both given; give one: --epochs counts passes over the training images (--min-steps may raise it), --steps exact optimiser steps"),
    ("negative --min-steps", lambda f: ["transfer", str(f.good), "--data", "fashion-mnist", "--min-steps", "-1"], "--min-steps must be at least 0, got -1"),
    ("config: epochs and steps both set", _config("length"), "length.toml.training: epochs (2) and steps (40) are both set; give one: epochs counts passes over the shots (min_steps may raise it), steps exact optimiser steps"),
    ("S and T of different architectures", _compare("good", "wide", "--arch", "builtin:cnn?width=8"), "is builtin:cnn?width=8; S and T must share one architecture (--arch names it for plain state dicts, S and T alike): make a T from S with `paramreuse train --arch builtin:cnn?width=4 --init "),
    ("--arch other than the model records", lambda f: ["study", "--quick", "--source", str(f.good), "--arch", "builtin:cnn?width=8", "--device", "cpu"], "good.safetensors records architecture builtin:cnn?width=4 but --arch is builtin:cnn?width=8; a model keeps the architecture it records, and S and T share one: pass --arch builtin:cnn?width=4, or use a model of builtin:cnn?width=8"),
    ("plan of another network", _apply("unet_plan", "--classes", "5-9"), "unet_plan.json does not fit the model: its units down.0.0.0, down.0.1.0, down.1.0.0, down.1.1.0 and 6 more are not in it (the model's units are features.0.0, features.1.0, features.3.0, features.4.0 and 4 more); make the plan for this architecture with `paramreuse plan` or `paramreuse study`"),
    ("JSON that is not a plan", _apply("not_plan", "--classes", "5-9"), "not_plan.json is not a plan (KeyError: 'layers'); use the plan.json that `paramreuse plan` or `paramreuse study` writes"),
    ("plan file does not exist", lambda f: ["apply", str(f.dir / "nowhere.json"), "--source", str(f.good), "--data", "fashion-mnist"], "nowhere.json does not exist; check the path (`paramreuse plan` and `paramreuse study` write plan.json)"),
    ("unknown --save", lambda f: ["transfer", str(f.good), "--data", "fashion-mnist", "--save", "some"], "--save takes plan, all, none, got 'some'"),
    ("transfer config: epochs and steps both set", lambda f: ["transfer", str(f.good), "--data", "fashion-mnist", "--config", str(f.dir / "length.toml")], "length.toml.training: epochs (2) and steps (40) are both set; give one: epochs counts passes over the shots (min_steps may raise it), steps exact optimiser steps"),
    ("grey source, RGB target", lambda f: ["study", "--target", f"folder:{f.rgb}", "--shots", "2", "--device", "cpu"], "source images have 1 channel(s) (grey) but target images have 3 (RGB): convert both to one with --channels 3 or --channels 1 (channels = N in [source] and [target])"),
    ("a class of one image", _train("--data", "folder:{lonely}", "--shots", "1"), "class 'owl' has no test image (too few images to hold one out for testing); leave it out with --classes cat,dog (or add images to it)"),
]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
PARAMS = [pytest.param(*c, id=c[0], marks=NO_CUDA if c[0].startswith("CUDA") else ()) for c in CASES]


@pytest.mark.parametrize("case,argv,message", PARAMS)
def test_bad_input_exits_2_with_one_clear_line(bad, fake_fmnist, torch_home, hf_cache, tmp_path, case, argv, message):  # noqa: F811
    args = argv(bad)
    message = message.replace("{torch_home}", str(torch_home)).replace("{hf_cache}", str(hf_cache))  # this test's empty caches
    if "--out" not in args and args[0] != "report":
        args = [*args, "--out", str(tmp_path / "out")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (case, result.output)
    lines = result.stderr.rstrip().splitlines()
    assert len(lines) == 1, lines  # no blank line before it either (the progress bar starts with the first event)
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


RELIABILITY = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
ELSEWHERE = {48, 49, 50, 51, 56, 58}  # rows tested through the CLI in tests/test_byo_models.py


def test_the_table_in_the_docs_is_the_table_here():
    """Every case here is a row of docs/reliability.md with the line the test expects; every row is a case."""
    rows = re.findall(r"^\| (\d+) \| (.*?) \| `.*?` \| `+ ?(.*?) ?`+ \|$", RELIABILITY.read_text(), flags=re.MULTILINE)
    documented = {name: (int(number), line) for number, name, line in rows}
    assert sorted(n for n, _ in documented.values()) == list(range(1, len(rows) + 1))
    for case, _, message in CASES:
        assert case in documented, case
        message = message.replace("{torch_home}", "$TORCH_HOME/hub/checkpoints").replace("{hf_cache}", "$HF_HUB_CACHE")
        assert message in documented[case][1], (documented[case][0], message)
    assert {n for name, (n, _) in documented.items() if name not in {c[0] for c in CASES}} == ELSEWHERE


def test_pickle_payload_never_runs(bad, tmp_path):
    """The payload would create a file when unpickled; torch.load(weights_only=False) proves it works."""
    result = runner.invoke(app, ["compare", str(bad.evil), str(bad.good), "--arch", TINY_ARCH, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "refused to load" in result.stderr
    assert not bad.pwned.exists()
    # The control: the same file, unpickled without the safeguard, does run the payload.
    with open(bad.evil, "rb") as f:
        assert f.read(2) == b"PK"  # a torch zip archive, as a real checkpoint would be
    torch.load(bad.evil, weights_only=False)
    assert bad.pwned.exists()
    bad.pwned.unlink()


def test_refusal_leaves_results_already_on_disk(bad, fake_fmnist, tmp_path):
    """Nothing already computed is lost: a failing verb does not touch the files in --out."""
    assert runner.invoke(app, ["compare", str(bad.good), str(bad.good), "--out", str(tmp_path), "--quiet"]).exit_code == 0
    before = (tmp_path / "comparison.json").read_bytes()
    assert runner.invoke(app, ["compare", str(bad.nan), str(bad.good), "--out", str(tmp_path)]).exit_code == 2
    assert (tmp_path / "comparison.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_pickle_module_is_not_used_for_safetensors(bad):
    """A safetensors file is parsed, never unpickled: a pickle renamed to .safetensors is just corrupt."""
    fake = bad.dir / "pickle.safetensors"
    fake.write_bytes(pickle.dumps({"weight": CreatesFile(bad.pwned)}))
    result = runner.invoke(app, ["compare", str(fake), str(bad.good), "--out", str(bad.dir / "o")])
    assert result.exit_code == 2 and "not a readable safetensors file" in result.stderr
    assert not bad.pwned.exists()


def test_every_shots_value_is_checked_before_any_run(bad, fake_fmnist, tmp_path):
    """transfer --shots 5,500: 500 is refused before the 5-shot runs start, so none is made."""
    args = ["transfer", str(bad.good), "--data", "fashion-mnist", "--classes", "5-9", "--shots", "5,500", "--seeds", "2",
            "--strategies", "scratch", "--device", "cpu", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "asked for 500 shots per class" in result.stderr
    log = tmp_path / RUNS_LOG
    assert not log.exists() or '"id"' not in log.read_text()
