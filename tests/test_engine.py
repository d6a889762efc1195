import copy

import pytest
import torch

from paramreuse.engine import GraphCutter, StopRule, replaced
from paramreuse.models import build_model
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
