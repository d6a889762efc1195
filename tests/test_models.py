import os
import pickle

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from paramreuse.errors import CheckpointError, SpecError
from paramreuse.models import ModelInfo, build_model, head_names, load_checkpoint, read_info, save_checkpoint
from tests.conftest import TINY_ARCH

FACTORY = """
from torch import nn

def build(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
"""


@pytest.mark.parametrize(
    "spec,in_channels,size,out_shape",
    [
        ("builtin:cnn", 1, 28, (2, 5)),
        (TINY_ARCH, 3, 16, (2, 5)),
        ("torchvision:resnet18", 1, 32, (2, 5)),
        ("timm:resnet18", 1, 32, (2, 5)),
        ("smp:Unet/resnet18", 1, 32, (2, 5, 32, 32)),
    ],
)
def test_each_architecture_kind_builds_and_runs(spec, in_channels, size, out_shape):
    model = build_model(spec, in_channels, 5).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, size, size)).shape == out_shape


def test_py_factory(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    model = build_model(f"py:{path}:build", 2, 7)
    assert model(torch.randn(1, 2, 8, 8)).shape == (1, 7)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("cnn", "has no kind"),
        ("keras:vgg", "unknown architecture kind 'keras'"),
        ("builtin:nope", "unknown builtin architecture 'nope'"),
        ("builtin:cnn?depth=3", "unexpected keyword"),
        ("torchvision:resnet9000", "unknown torchvision model"),
        ("timm:resnet9000", "unknown timm model"),
        ("smp:Unet", "needs ARCH/ENCODER"),
        ("py:missing.py:build", "does not exist"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        build_model(spec, 1, 5)


def test_head_names():
    assert head_names(build_model("builtin:cnn", 1, 5)) == ["head.weight", "head.bias"]
    assert head_names(build_model("torchvision:resnet18", 1, 5)) == ["fc.weight", "fc.bias"]


def _trained_like(spec=TINY_ARCH) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(spec, 1, 5)
    model.train()
    model(torch.randn(8, 1, 16, 16))  # moves the BN running statistics away from their defaults
    return model


def test_checkpoint_round_trip_is_bit_identical(tmp_path):
    model = _trained_like()
    info = ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5, data="fashion-mnist", classes=(0, 1, 2, 3, 4))
    save_checkpoint(tmp_path / "m.safetensors", model, info)
    loaded, loaded_info = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded_info == info
    original, again = model.state_dict(), loaded.state_dict()
    assert original.keys() == again.keys()
    for key in original:
        assert original[key].dtype == again[key].dtype
        assert torch.equal(original[key], again[key]), key


def test_plain_state_dicts_need_arch(tmp_path):
    model = _trained_like()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "plain.safetensors")
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="--arch"):
        load_checkpoint(tmp_path / "plain.safetensors")
    for name in ("plain.safetensors", "plain.pt"):
        loaded, info = load_checkpoint(tmp_path / name, arch=TINY_ARCH)
        assert (info.in_channels, info.num_classes) == (1, 5)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


class Exploit:
    """Unpickled, this creates the file ``path``: proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_that_runs_code_is_refused(tmp_path, writer):
    path, proof = tmp_path / "evil.pt", tmp_path / "code-ran"
    if writer == "torch.save":
        torch.save({"weight": Exploit(proof)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"weight": Exploit(proof)}, f)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(path, arch=TINY_ARCH)
    assert not proof.exists()
    # The control: unpickled without the safeguard, the same file does run its payload.
    torch.load(path, weights_only=False) if writer == "torch.save" else pickle.loads(path.read_bytes())
    assert proof.exists()


def test_shape_mismatch_lists_the_tensors(tmp_path):
    model = _trained_like()
    info = ModelInfo(arch="builtin:cnn?width=8", in_channels=1, num_classes=5)
    save_checkpoint(tmp_path / "m.safetensors", model, info)
    with pytest.raises(CheckpointError, match=r"shape mismatch features\.0\.0\.weight \(4, 1, 3, 3\) vs model \(8, 1, 3, 3\)"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_missing_and_unexpected_tensors(tmp_path):
    state = {k: v.contiguous() for k, v in _trained_like().state_dict().items()}
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="missing head.bias; unexpected extra.weight"):
        load_checkpoint(tmp_path / "m.safetensors", arch=TINY_ARCH)


def test_nan_weights_refused(tmp_path):
    model = _trained_like()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    save_checkpoint(tmp_path / "m.safetensors", model, ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    with pytest.raises(CheckpointError, match="NaN or Inf values in head.weight"):
        load_checkpoint(tmp_path / "m.safetensors")


@pytest.mark.parametrize("name,content", [("m.safetensors", b"\x10\x00\x00"), ("m.pt", b"PK\x03\x04broken")])
def test_corrupt_files(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / name, arch=TINY_ARCH)


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", _trained_like(), ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))
    data = (tmp_path / "m.safetensors").read_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "m.safetensors")


def test_recorded_python_factory_needs_consent(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    spec = f"py:{path}:build"
    save_checkpoint(tmp_path / "m.safetensors", build_model(spec, 1, 3), ModelInfo(arch=spec, in_channels=1, num_classes=3))
    assert read_info(tmp_path / "m.safetensors").arch == spec
    with pytest.raises(CheckpointError, match="runs that Python file"):
        load_checkpoint(tmp_path / "m.safetensors")
    model, _ = load_checkpoint(tmp_path / "m.safetensors", arch=spec)
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)
