"""Property tests: alignment, distances, replacement, and the two loaders that read user files.

The builtin CNN's permutation round trip over random widths is in tests/test_align.py; here
the networks are random stacks of conv/BN/ReLU of random depth and width.
"""

from __future__ import annotations

import copy
import json
import struct

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from paramreuse.align.matching import align_models
from paramreuse.align.specs import apply_permutation, permutation_spec, random_permutation
from paramreuse.config import from_mapping
from paramreuse.errors import ParamreuseError
from paramreuse.judge.kernels import compare_models, rmse
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.models import ModelInfo, build_model, load_checkpoint, save_checkpoint
from paramreuse.study import StudyConfig
from tests.conftest import TINY_ARCH, synthetic_set
from tests.test_align import max_output_diff, max_param_diff, randomize_norms

FAST = settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class RandomCNN(nn.Module):
    """conv-BN-ReLU stages of the given widths, global pooling, a hidden linear layer and a head."""

    def __init__(self, widths: list[int], hidden: int, in_channels: int = 2, num_classes: int = 3):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(c, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.fc(self.features(x).mean((2, 3))))


networks = st.builds(
    lambda widths, hidden, seed: (widths, hidden, seed),
    st.lists(st.integers(1, 6), min_size=1, max_size=4),
    st.integers(1, 6),
    st.integers(0, 2**16),
)


def random_cnn(widths: list[int], hidden: int, seed: int) -> RandomCNN:
    torch.manual_seed(seed)
    return randomize_norms(RandomCNN(widths, hidden), seed).eval()


def _agreement(a: nn.Module, b: nn.Module) -> float:
    """Weight matching's objective: the inner product of the two models' parameters."""
    pb = dict(b.named_parameters())
    with torch.no_grad():
        return sum(float((v.double() * pb[k].double()).sum()) for k, v in a.named_parameters())


@FAST
@given(net=networks, perm_seed=st.integers(0, 2**16))
def test_alignment_of_a_random_permutation_of_a_random_network(net, perm_seed):
    """The permuted copy computes the same function; weight matching keeps it and never lowers the agreement."""
    model = random_cnn(*net)
    spec = permutation_spec(model)
    assert {g.size for g in spec.groups} <= {*net[0], net[1]}
    permuted = apply_permutation(model, spec, random_permutation(spec, perm_seed))
    assert max_output_diff(permuted, model, torch.randn(2, 2, 6, 6)) < 1e-4
    aligned = align_models(permuted, model).model
    assert max_output_diff(aligned, model, torch.randn(2, 2, 6, 6)) < 1e-4
    assert _agreement(aligned, model) >= _agreement(permuted, model) - 1e-6


def test_weight_matching_recovers_most_random_permutations():
    """Exact recovery is the optimum; coordinate descent stops short of it on a few random networks."""
    rng = np.random.default_rng(0)
    recovered = 0
    for i in range(40):
        widths = rng.integers(1, 7, size=rng.integers(1, 5)).tolist()
        model = random_cnn(widths, int(rng.integers(1, 7)), i)
        spec = permutation_spec(model)
        permuted = apply_permutation(model, spec, random_permutation(spec, i))
        recovered += max_param_diff(align_models(permuted, model).model, model) < 1e-6
    assert recovered >= 36


def test_weight_matching_recovers_the_network_that_once_stopped_in_a_local_optimum():
    """Found by the property test above: random-order coordinate descent stopped short here; the first sweep
    in graph order (each group matched on its already matched inputs) recovers it."""
    model = random_cnn([4], 5, 1416)
    spec = permutation_spec(model)
    permuted = apply_permutation(model, spec, random_permutation(spec, 1))
    assert max_param_diff(align_models(permuted, model, seed=0).model, model) < 1e-6


finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)


@FAST
@given(data=st.data(), n=st.integers(1, 50))
def test_rmse_is_symmetric_nonnegative_and_zero_on_identity(data, n):
    a = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)))
    b = torch.tensor(data.draw(st.lists(finite, min_size=n, max_size=n)))
    assert rmse(a, a) == 0.0
    assert rmse(a, b) == rmse(b, a) >= 0.0
    assert (rmse(a, b) == 0.0) == torch.equal(a, b)


@FAST
@given(net=networks, other_seed=st.integers(0, 2**16))
def test_compare_models_is_symmetric_in_raw_rmse_and_zero_on_identity(net, other_seed):
    a = random_cnn(*net)
    b = random_cnn(net[0], net[1], other_seed)
    same = compare_models(a, copy.deepcopy(a), align="none")
    assert all(layer.rmse_raw == 0.0 and layer.rmse == 0.0 for layer in same.layers)
    ab, ba = compare_models(a, b, align="none"), compare_models(b, a, align="none")
    assert [layer.rmse_raw for layer in ab.layers] == [layer.rmse_raw for layer in ba.layers]
    assert [layer.name for layer in ab.layers] == [layer.name for layer in ba.layers]


@settings(max_examples=5, deadline=None)
@given(width=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_replacing_identical_parameters_is_a_no_op(width, seed):
    torch.manual_seed(seed)
    target = randomize_norms(build_model(f"builtin:cnn?width={width}", 1, 5), seed).eval()
    val = synthetic_set(40, seed=seed % 100)
    sweep = replacement_sweep(copy.deepcopy(target), target, val, val, SweepConfig(bootstrap=50, batch_size=40))
    fixed = [row for row in sweep.rows if not row.recalibrated]
    assert fixed and all(row.drop == 0.0 and row.value == sweep.baseline for row in fixed)


# ---- loaders: anything but a ParamreuseError is a bug ------------------------------------------


def _valid_checkpoint(tmp_path) -> bytes:
    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "valid.safetensors", build_model(TINY_ARCH, 1, 5),
                           ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5))  # fmt: skip
    return path.read_bytes()


def _load(path):
    try:
        load_checkpoint(path, arch=TINY_ARCH)
    except ParamreuseError:
        pass


@FAST
@given(content=st.binary(max_size=512), suffix=st.sampled_from([".safetensors", ".pt"]))
def test_checkpoint_loader_on_random_bytes(tmp_path, content, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(content)
    _load(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_checkpoint_loader_on_damaged_checkpoints(tmp_path, data):
    """Bit flips, overwrites and cuts of a real checkpoint, header included."""
    valid = _valid_checkpoint(tmp_path)
    header_end = 8 + struct.unpack("<Q", valid[:8])[0]
    content = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, header_end + 64))  # mostly the header, where damage matters
        content[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.none() | st.integers(0, len(content)))
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(bytes(content[:cut]))
    try:
        load_checkpoint(path)
    except ParamreuseError:
        pass


metadata_values = st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=5) | st.lists(st.integers(-1, 3), max_size=3)


@FAST
@given(fields=st.dictionaries(st.sampled_from(["arch", "in_channels", "num_classes", "input_size", "classes", "task"]),
                              metadata_values, max_size=4))  # fmt: skip
def test_checkpoint_loader_on_wrong_metadata(tmp_path, fields):
    """A safetensors file whose recorded paramreuse metadata has wrong types or values."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in build_model(TINY_ARCH, 1, 5).state_dict().items()}
    info = ModelInfo(arch=TINY_ARCH, in_channels=1, num_classes=5).to_dict() | fields
    path = tmp_path / "meta.safetensors"
    save_file(state, path, metadata={"paramreuse": json.dumps(info)})
    try:
        load_checkpoint(path)
    except ParamreuseError:
        pass


def _config_keys() -> list[str]:
    import dataclasses

    keys = set()
    stack = [StudyConfig()]
    while stack:
        obj = stack.pop()
        for f in dataclasses.fields(obj):
            keys.add(f.name)
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                stack.append(value)
    return sorted(keys) + ["shot", "epoch", "nope"]


scalars = st.none() | st.booleans() | st.integers(-5, 500) | st.floats(allow_nan=True) | st.text(max_size=6)
config_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_config_keys()), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(mapping=st.dictionaries(st.sampled_from(_config_keys()), config_values, max_size=5))
def test_config_loader_only_raises_config_errors(mapping):
    try:
        config = from_mapping(StudyConfig, mapping)
    except ParamreuseError:
        return
    assert isinstance(config, StudyConfig)
    assert isinstance(config.sweep.params, tuple) and all(isinstance(p, str) for p in config.sweep.params)
    assert isinstance(config.transfer.shots, tuple) and all(type(n) is int for n in config.transfer.shots)
    assert isinstance(config.transfer.strategies, tuple) and all(isinstance(n, str) for n in config.transfer.strategies)
