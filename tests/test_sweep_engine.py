import copy
import dataclasses

import pytest
import torch

from paramreuse.data import ImageSet
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.judge.replacement_engine import Evaluator, GraphCutter, StopRule, Variant, replaced
from paramreuse.models import build_model
from paramreuse.tasks import CLASSIFICATION, SEGMENTATION, Task
from tests.conftest import TINY_ARCH


def test_replaced_restores_every_value():
    torch.manual_seed(0)
    model = build_model(TINY_ARCH, 1, 5)
    before = copy.deepcopy(model.state_dict())
    values = {"features.0.0.weight": torch.zeros_like(model.features[0][0].weight)}
    with replaced(model, values):
        assert torch.equal(model.features[0][0].weight, values["features.0.0.weight"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    "spec,size,module,frontier_size",
    [
        (TINY_ARCH, 16, "features.3.0", 1),
        # inside a residual block both the branch input and the skip stream cross the cut
        ("torchvision:resnet18", 32, "layer2.0.bn1", 2),
        # encoder-decoder graphs: the skips of every resolution still to be decoded cross the cut
        ("builtin:unet?width=4", 28, "up.0.0.0", 2),
        ("smp:Unet/resnet18", 32, "decoder.blocks.1.conv1.0", 6),
        # pyramid pooling: the other pooling branches and the encoder features cross the cut
        ("smp:PSPNet/resnet18", 32, "decoder.psp.blocks.2.pool.1.0", 6),
    ],
)
def test_cut_runs_the_suffix_exactly(spec, size, module, frontier_size):
    torch.manual_seed(0)
    model = build_model(spec, 1, 5).eval()
    cutter = GraphCutter(model)
    assert cutter.usable
    cut = cutter.cut({f"{module}.weight"})
    assert cutter.nodes[cut].target == module
    assert len(cutter.frontier(cut)) == frontier_size
    x = torch.randn(3, 1, size, size)
    with torch.no_grad():
        env = cutter.run({cutter.nodes[0]: x}, 1, cut)
        env = {n: v for n, v in env.items() if n in set(cutter.frontier(cut))}
        out = cutter.output(cutter.run(env, cut, len(cutter.nodes)))
        assert torch.allclose(out, model(x), atol=1e-6)


def test_stop_rule():
    rule = StopRule(tolerance=0.02, min_samples=100)
    assert not rule.decided(torch.zeros(50))  # too few samples
    assert not rule.decided(torch.zeros(300))  # 7/300 > 0.02: cannot rule out a 2-point drop yet
    assert rule.decided(torch.zeros(1000))  # clearly below the tolerance
    big = torch.tensor([1.0, 0.0] * 200)  # a 50-point drop
    assert rule.decided(big)
    near = torch.tensor([1.0] + [0.0] * 49).repeat(8)  # 2-point drop: never decided
    assert not rule.decided(near)


# ---- the cached sweep: in-place writes after the cut, and cached == naive for every model kind ----

IN_PLACE_NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, forward, in_channels=1, num_classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, num_classes)
        self.body = forward

    def forward(self, x):
        return self.fc(self.body(self, x).mean((2, 3)))


def relu_after_cut(self, x):  # conv2 reads h, then an in-place ReLU writes into h
    h = self.conv1(x)
    y = self.conv2(h)
    h = self.act(h)
    return h + y


def skip_add(self, x):  # a residual add into the skip stream (fx records `h += y` as an out-of-place add)
    h = self.conv1(x)
    h.add_(self.conv2(h))
    return h


def view_then_write(self, x):  # two cached tensors share memory: v is a view of h
    h = self.conv1(x)
    v = h[:, :2]
    y = self.conv2(h)
    self.act(h)
    return torch.cat([v, y[:, 2:]], 1)


def build(forward="skip_add", in_channels=1, num_classes=5):
    return Net(globals()[forward], in_channels, num_classes)
'''


def in_place_spec(folder, forward: str) -> str:
    path = folder / f"in_place_{forward}.py"
    path.write_text(IN_PLACE_NETS.replace('forward="skip_add"', f'forward="{forward}"'))
    return f"py:{path}:build"


@pytest.mark.parametrize("forward", ["relu_after_cut", "skip_add", "view_then_write"])
def test_cached_frontier_survives_in_place_writes_after_the_cut(forward, tmp_path):
    torch.manual_seed(0)
    model = build_model(in_place_spec(tmp_path, forward), 1, 5).eval()
    cutter = GraphCutter(model)
    assert cutter.nodes[cutter.cut({"conv2.weight"})].target == "conv2"  # conv1's output is cached, then written
    batches = [(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)) for _ in range(3)]
    variants = [Variant({"conv2.weight": torch.randn_like(model.conv2.weight)}) for _ in range(3)]
    variants.append(Variant({"conv2.bias": torch.randn_like(model.conv2.bias)}))

    def logits(outputs, _labels):  # a continuous score: any corrupted input shows
        return outputs.sum(1).double()

    naive = dict(Evaluator(model, batches, logits, cached=False).evaluate_all(variants))
    evaluator = Evaluator(model, batches, logits, cached=True)
    cached = dict(evaluator.evaluate_all(variants))
    assert evaluator.mode == "cached"
    assert not torch.allclose(naive[0].scores, naive[1].scores)  # the variants differ
    for i in range(len(variants)):
        assert torch.allclose(cached[i].scores, naive[i].scores, atol=1e-6), (forward, i)


def _pairs_input(task: Task, n: int, size: int) -> ImageSet:
    x = torch.randn(n, 1, size, size)
    if task is SEGMENTATION:
        return ImageSet(x, torch.zeros(n, dtype=torch.long), ("a",), torch.randint(0, 2, (n, size, size)), ("bg", "fg"))
    return ImageSet(x, torch.randint(0, 5, (n,)), tuple("abcde"))


@pytest.mark.parametrize(
    "spec,size,task",
    [
        pytest.param(TINY_ARCH, 28, CLASSIFICATION, id="builtin-cnn"),
        pytest.param("builtin:unet?width=4", 28, SEGMENTATION, id="builtin-unet"),
        pytest.param("torchvision:resnet18", 32, CLASSIFICATION, id="torchvision-resnet18"),
        pytest.param("timm:test_resnet", 32, CLASSIFICATION, id="timm-test_resnet"),
        pytest.param("smp:Unet/resnet18", 32, SEGMENTATION, id="smp-unet"),
        pytest.param("py", 16, CLASSIFICATION, id="py-factory"),
    ],
)
def test_cached_sweep_equals_naive_for_every_model_kind(spec, size, task, tmp_path):
    torch.manual_seed(0)
    spec = in_place_spec(tmp_path, "skip_add") if spec == "py" else spec
    classes = 2 if task is SEGMENTATION else 5
    s, t = build_model(spec, 1, classes), build_model(spec, 1, classes)
    for m in (s, t):  # move BN statistics off their defaults so every row matters
        m.train()
        with torch.no_grad():
            m(torch.randn(8, 1, size, size))
    val = _pairs_input(task, 8, size)
    config = SweepConfig(params=("conv.weight", "unit"), adaptive=False, bootstrap=20, batch_size=4)
    naive, cached = (
        replacement_sweep(s, t, val, val, dataclasses.replace(config, cached=c), task=task) for c in (False, True)
    )
    assert (naive.mode, cached.mode) == ("naive", "cached")
    assert [r.id for r in naive.rows] == [r.id for r in cached.rows] and len(naive.rows) > 3
    for a, b in zip(naive.rows, cached.rows):
        assert abs(a.value - b.value) <= 1e-6 and abs(a.drop - b.drop) <= 1e-6, (a.id, a.value, b.value)
