"""Bring your own network: plain state dicts, pretrained specs from local caches, other class
counts, input sizes and the user's own code, in every verb that reads a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from paramreuse.cli import app
from paramreuse.errors import CheckpointError, SpecError
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.models.loading import load_source
from paramreuse.training.run import init_from_checkpoint
from tests.conftest import TINY_ARCH

runner = CliRunner()
FAST = ["--epochs", "1", "--min-steps", "3", "--device", "cpu", "--quiet"]

NET_32 = """
from torch import nn

def build(in_channels=1, num_classes=10):
    # a flatten before the classifier: the network takes 32x32 images only
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, num_classes))
"""


def _plain(path: Path, arch: str = TINY_ARCH, channels: int = 1, classes: int = 5, seed: int = 0, order=None) -> dict:
    """Save a fresh model's state dict as a plain file (no paramreuse metadata), keys in ``order``."""
    torch.manual_seed(seed)
    state = {k: v.detach().clone().contiguous() for k, v in build_model(arch, channels, classes).state_dict().items()}
    keys = order(list(state)) if order else list(state)
    state = {k: state[k] for k in keys}
    save_file(state, path) if path.suffix == ".safetensors" else torch.save(state, path)
    return state


def _same(model: torch.nn.Module, state: dict, skip: tuple[str, ...] = ()) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith(skip))


def _one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert "Traceback" not in result.output


# -- 1. any source, sizes by name ------------------------------------------------------------


def test_torchvision_safetensors_sizes_come_from_names_not_file_order(tmp_path):
    # safetensors sorts keys: layer4.1.conv2.weight (512 outputs) comes last, fc.weight does not
    state = _plain(tmp_path / "r18.safetensors", "torchvision:resnet18", channels=3, classes=7)
    model, info = load_checkpoint(tmp_path / "r18.safetensors", arch="torchvision:resnet18")
    assert (info.in_channels, info.num_classes) == (3, 7)
    assert _same(model, state)


def test_plain_pt_in_reversed_key_order_loads(tmp_path):
    state = _plain(tmp_path / "m.pt", order=lambda keys: keys[::-1])
    model, info = load_checkpoint(tmp_path / "m.pt", arch=TINY_ARCH)
    assert (info.in_channels, info.num_classes) == (1, 5) and _same(model, state)


def test_missing_and_unexpected_keys_are_listed_even_when_sizes_are_inferred(tmp_path):
    torch.manual_seed(0)
    state = dict(build_model(TINY_ARCH, 1, 5).state_dict())
    state.pop("features.1.0.weight")
    state["stray.weight"] = torch.zeros(3)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="missing features.1.0.weight; unexpected stray.weight"):
        load_checkpoint(tmp_path / "m.safetensors", arch=TINY_ARCH)


def test_init_from_plain_pt_copies_everything_but_the_head(tmp_path):
    state = _plain(tmp_path / "s.pt", classes=10)
    model = build_model(TINY_ARCH, 1, 5)
    fit = init_from_checkpoint(model, tmp_path / "s.pt", arch=TINY_ARCH)
    assert _same(model, state, skip=("head.",))
    assert fit.fresh == ("head.weight", "head.bias")


def test_train_init_from_plain_pt(fake_fmnist, tmp_path):
    _plain(tmp_path / "s.pt", classes=10)
    args = ["train", "--arch", TINY_ARCH, "--classes", "0-4", "--shots", "5", "--init", str(tmp_path / "s.pt"), *FAST]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "T")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "T" / "train.json").read_text())["init"] == str(tmp_path / "s.pt")


def test_py_architecture_trains_twice(fake_fmnist, tmp_path):
    (tmp_path / "net.py").write_text(NET_32.replace("32 * 32", "28 * 28"))
    args = ["train", "--arch", f"py:{tmp_path / 'net.py'}:build", "--classes", "0-4", "--shots", "5", *FAST]
    args += ["--out", str(tmp_path / "run")]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed"] is True


def test_rank_reads_a_plain_pt_with_arch(fake_fmnist, tmp_path):
    _plain(tmp_path / "s.pt", classes=10)
    args = ["rank", str(tmp_path / "s.pt"), "--arch", TINY_ARCH, "--target", "fashion-mnist", "--classes", "5-9",
            "--shots", "5", "--no-ours", "--device", "cpu", "--quiet", "--out", str(tmp_path / "rank")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rank" / "rank.json").read_text())["rows"][0]["arch"] == TINY_ARCH


def test_transfer_reads_a_plain_pt_with_arch(fake_fmnist, tmp_path):
    _plain(tmp_path / "s.pt", classes=10)
    (tmp_path / "plan.json").write_text(json.dumps({"layers": [{"name": "features.0.0", "decision": "reuse-frozen"}]}))
    args = ["transfer", str(tmp_path / "s.pt"), "--arch", TINY_ARCH, "--plan", str(tmp_path / "plan.json"),
            "--data", "fashion-mnist", "--classes", "5-9", "--shots", "2", "--seeds", "1", "--strategies", "plan",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "transfer")]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "plan" in json.loads((tmp_path / "transfer" / "transfer.json").read_text())["strategies"]


# -- 2. pretrained weights from the local caches ------------------------------------------------

MOBILENET_FILE = "mobilenet_v3_small-047dcff4.pth"  # the name torchvision's URL gives the cached file


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_pretrained_weights_come_from_torch_home(torch_home):
    import torchvision

    torch.manual_seed(3)
    cached = torchvision.models.mobilenet_v3_small().state_dict()
    torch_home.mkdir(parents=True)
    torch.save(cached, torch_home / MOBILENET_FILE)
    model = build_model("torchvision:mobilenet_v3_small?weights=DEFAULT", 1, 5)
    own = model.state_dict()
    assert torch.equal(own["features.0.0.weight"], cached["features.0.0.weight"].sum(dim=1, keepdim=True))
    assert _same(model, cached, skip=("features.0.0.weight", "classifier.3."))
    assert own["classifier.3.weight"].shape == (5, 1024)
    native, info = load_checkpoint("torchvision:mobilenet_v3_small?weights=IMAGENET1K_V1")
    assert _same(native, cached) and (info.in_channels, info.num_classes) == (3, 1000)
    assert info.arch == "torchvision:mobilenet_v3_small"


def test_torchvision_pretrained_without_cache_is_one_clean_error(torch_home):
    with pytest.raises(CheckpointError, match=rf"{torch_home / MOBILENET_FILE}.*TORCH_HOME"):
        build_model("torchvision:mobilenet_v3_small?weights=DEFAULT", 1, 5)
    with pytest.raises(SpecError, match="IMAGENET1K_V1"):
        build_model("torchvision:mobilenet_v3_small?weights=IMAGENET9", 1, 5)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    import huggingface_hub.constants

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def _cache_timm(cache: Path, name: str) -> dict:
    """Write a random timm model's weights where the Hugging Face hub would have cached them."""
    import timm

    torch.manual_seed(4)
    state = {k: v.contiguous() for k, v in timm.create_model(name.split(".")[0]).state_dict().items()}
    repo = cache / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(state, repo / "snapshots" / "abc123" / "model.safetensors")
    return state


def test_timm_pretrained_weights_come_from_the_hf_cache(hf_cache):
    cached = _cache_timm(hf_cache, "test_resnet.r160_in1k")
    for spec in ("timm:test_resnet.r160_in1k", "timm:test_resnet?pretrained=true"):
        model = build_model(spec, 1, 4)
        own = model.state_dict()
        assert torch.equal(own["conv1.0.weight"], cached["conv1.0.weight"].sum(dim=1, keepdim=True))
        assert _same(model, cached, skip=("conv1.0.weight", "fc."))
        assert own["fc.weight"].shape[0] == 4
    random = build_model("timm:test_resnet.r160_in1k?pretrained=false", 1, 4).state_dict()
    assert not torch.equal(random["layer1.0.conv1.weight"], cached["layer1.0.conv1.weight"])  # pretrained=false: fresh


def test_timm_tag_without_cache_never_gives_random_weights(hf_cache):
    with pytest.raises(CheckpointError, match=r"models--timm--test_resnet\.r160_in1k.*HF_HOME"):
        build_model("timm:test_resnet.r160_in1k", 1, 4)


def test_pretrained_source_is_adapted_to_grey_images(torch_home):
    import torchvision

    torch_home.mkdir(parents=True)
    torch.manual_seed(5)
    cached = torchvision.models.mobilenet_v3_small().state_dict()
    torch.save(cached, torch_home / MOBILENET_FILE)
    model = build_model("torchvision:mobilenet_v3_small", 1, 5)
    fit = init_from_checkpoint(model, "torchvision:mobilenet_v3_small?weights=DEFAULT")
    assert fit.adapted == ("features.0.0.weight",) and "classifier.3.weight" in fit.fresh
    assert torch.equal(model.state_dict()["features.0.0.weight"], cached["features.0.0.weight"].sum(1, keepdim=True))


# -- 4. other class counts in compare, replace, plan ------------------------------------------------


def test_compare_and_plan_a_target_with_other_classes(fake_fmnist, tmp_path):
    _plain(tmp_path / "s.pt", classes=10, seed=0)
    _plain(tmp_path / "t.pt", classes=3, seed=1)
    pair = [str(tmp_path / "s.pt"), str(tmp_path / "t.pt"), "--arch", TINY_ARCH]
    result = runner.invoke(app, ["compare", *pair, "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "fresh head" in " ".join(result.stdout.split())
    layers = json.loads((tmp_path / "c" / "comparison.json").read_text())["layers"]
    assert layers[-1]["shape"] == [3, 16]
    args = ["plan", *pair, "--data", "fashion-mnist", "--classes", "0-2", "--shots", "5", "--device", "cpu", "--quiet"]
    result = runner.invoke(app, [*args, "--params", "unit", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "plan.json").is_file()


# -- 5. input size ------------------------------------------------------------------------------


def test_compare_a_network_that_takes_32x32_only(tmp_path):
    (tmp_path / "net.py").write_text(NET_32)
    arch = f"py:{tmp_path / 'net.py'}:build"
    _plain(tmp_path / "s.pt", arch, seed=0)
    _plain(tmp_path / "t.pt", arch, seed=1)
    base = ["compare", str(tmp_path / "s.pt"), str(tmp_path / "t.pt"), "--arch", arch, "--align", "weights", "--quiet"]
    _one_line_error(runner.invoke(app, [*base, "--out", str(tmp_path / "a")]), "cannot take 1x28x28 inputs")
    result = runner.invoke(app, [*base, "--input-size", "32", "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "comparison.json").read_text())["alignment"]["method"] == "weights"


def test_s_and_t_of_different_architectures_is_one_line_saying_which_is_which(tmp_path):
    """Issue 21: S builtin, T a user's py: network. The advice to confirm T's file with --arch used to end
    in a second error about S; now the first line says what each is and how to get a pair, --arch or not."""
    (tmp_path / "net.py").write_text(NET_32)
    arch = f"py:{tmp_path / 'net.py'}:build"
    torch.manual_seed(0)
    s = save_checkpoint(tmp_path / "s.safetensors", build_model(TINY_ARCH, 1, 5), ModelInfo(TINY_ARCH, 1, 5))
    t = save_checkpoint(tmp_path / "t.safetensors", build_model(arch, 1, 5), ModelInfo(arch, 1, 5, input_size=(32, 32)))
    message = (f"S ({s}) is {TINY_ARCH} but T ({t}) is {arch}; S and T must share one architecture (--arch names it "
               f"for plain state dicts, S and T alike): make a T from S with `paramreuse train --arch {TINY_ARCH} "
               f"--init {s} --data ...`, or use an S of {arch}")  # fmt: skip
    for extra in ([], ["--arch", arch]):
        result = runner.invoke(app, ["compare", str(s), str(t), *extra, "--quiet", "--out", str(tmp_path / "o")])
        _one_line_error(result, message)


def test_a_builtin_spelled_with_its_default_options_is_the_same_architecture(tmp_path):
    """builtin:cnn records itself as written; --arch builtin:cnn?width=16 (its default) names the same network."""
    path = save_checkpoint(tmp_path / "s.safetensors", build_model("builtin:cnn", 1, 5), ModelInfo("builtin:cnn", 1, 5))
    assert load_source(path, "builtin:cnn?width=16")[1].arch == "builtin:cnn"
    with pytest.raises(SpecError, match="records architecture builtin:cnn but --arch is builtin:cnn\\?width=8"):
        load_source(path, "builtin:cnn?width=8")


def test_input_size_takes_one_number_or_two():
    from paramreuse.cli.common import parse_input_size

    assert parse_input_size("32") == (32, 32) and parse_input_size("24,40") == (24, 40)
    with pytest.raises(SpecError, match="--input-size"):
        parse_input_size("big")


# -- 8. the user's own code and channel mismatches -----------------------------------------------


@pytest.mark.parametrize(
    "source,message",
    [
        ("def build(:\n", "does not import (SyntaxError"),
        ("import no_such_module_here\n", "does not import (ModuleNotFoundError"),
        ("def build(in_channels, num_classes):\n    raise ValueError('no such width')\n", "raised ValueError: no such width"),
        (NET_32.replace("nn.Conv2d(in_channels, 4", "nn.Conv2d(3, 4"), "ignores in_channels=1"),
    ],
)
def test_errors_in_the_users_factory_are_one_line(fake_fmnist, tmp_path, source, message):
    (tmp_path / "net.py").write_text(source)
    arch = f"py:{tmp_path / 'net.py'}:build"
    with pytest.raises(SpecError, match=str(tmp_path / "net.py")):
        build_model(arch, 1, 5)
    result = runner.invoke(app, ["train", "--arch", arch, "--classes", "0-4", *FAST, "--out", str(tmp_path / "r")])
    _one_line_error(result, message)


def test_rank_of_an_rgb_source_on_grey_images(fake_fmnist, tmp_path):
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "rgb.safetensors", build_model(TINY_ARCH, 3, 5),
                           ModelInfo(arch=TINY_ARCH, in_channels=3, num_classes=5))  # fmt: skip
    args = ["rank", str(path), "--target", "fashion-mnist", "--classes", "5-9", "--shots", "5", "--no-ours",
            "--device", "cpu", "--quiet", "--out", str(tmp_path / "rank")]  # fmt: skip
    _one_line_error(runner.invoke(app, args), "takes 3-channel images but the data has 1 channels")
