"""Segmentation and reconstruction: tasks, data with masks, the UNet, and every stage on both tasks."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from paramreuse.align.matching import align_models
from paramreuse.align.specs import apply_permutation, permutation_spec, random_permutation
from paramreuse.backends import RunContext
from paramreuse.cli import app
from paramreuse.data import load_task
from paramreuse.errors import DataError
from paramreuse.judge.assess import assess
from paramreuse.judge.kernels import compare_models
from paramreuse.judge.replacement import SweepConfig, replacement_sweep
from paramreuse.models import build_model, load_checkpoint
from paramreuse.tasks import RECONSTRUCTION, SEGMENTATION, SEGMENTATION_DICE
from paramreuse.training.loop import TrainConfig
from paramreuse.training.run import RunSpec, run_training
from paramreuse.transfer.config import Source, TransferConfig
from paramreuse.transfer.grid import run_transfer
from tests.conftest import stripe_rows
from tests.test_align import max_param_diff, randomize_norms

UNET = "builtin:unet?width=4"
runner = CliRunner()


def logits_for(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Outputs whose argmax is ``labels`` (N, H, W)."""
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float() * 10


# ---- tasks -----------------------------------------------------------------------------


def test_dice_and_iou_per_image_against_their_formulas():
    target = torch.zeros(3, 4, 4, dtype=torch.int64)
    target[:, :2] = 1  # 8 foreground pixels in each image
    pred = target.clone()
    pred[1, 0] = 0  # image 1: 4 true positives, 4 false negatives
    pred[1, 3, :2] = 2  # ... and 2 false positives of another class
    empty = torch.zeros(1, 4, 4, dtype=torch.int64)
    outputs = logits_for(torch.cat([pred, empty]), 3)
    targets = torch.cat([target, empty])
    dice = SEGMENTATION.scores(outputs, targets)
    tp, fp, fn = 4, 2, 4
    assert dice[0] == pytest.approx(1.0) and dice[2] == pytest.approx(1.0)
    assert dice[1] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert dice[3] == 1.0  # no foreground in either map: nothing missed
    iou = SEGMENTATION.extra_scores(outputs, targets)
    # per class, then the mean over the foreground classes: class 1 4/8, class 2 0/2
    assert iou[1] == pytest.approx((4 / 8 + 0 / 2) / 2)
    assert iou[0] == pytest.approx(1.0)


def test_psnr_and_ssim_per_image():
    torch.manual_seed(0)
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    noisy = images + 0.1 * torch.randn_like(images)
    psnr = RECONSTRUCTION.scores(noisy, images)
    mse = ((noisy - images) ** 2).mean(dim=(1, 2, 3))
    assert torch.allclose(psnr, 10 * torch.log10(4 / mse).double(), atol=1e-4)
    assert RECONSTRUCTION.extra_scores(images, images) == pytest.approx([1.0] * 3, abs=1e-5)
    assert (RECONSTRUCTION.extra_scores(noisy, images) < 1).all()


def test_segmentation_losses():
    labels = torch.randint(0, 3, (2, 8, 8))
    perfect = logits_for(labels, 3)
    assert SEGMENTATION.loss(perfect, labels) < 1e-3
    assert SEGMENTATION_DICE.loss(perfect, labels) < 1e-3
    flat = torch.zeros(2, 3, 8, 8)
    assert SEGMENTATION.loss(flat, labels) == pytest.approx(math.log(3), abs=1e-5)
    assert SEGMENTATION_DICE.loss(flat, labels) > 0.3
    x = torch.randn(2, 1, 8, 8)
    assert RECONSTRUCTION.loss(x + 1, x) == pytest.approx(1.0)


# ---- data ------------------------------------------------------------------------------


def test_fashion_mnist_masks_are_the_garment_silhouettes(fake_seg_dir):
    data = load_task("fashion-mnist-seg", "0-4", shots=5, data_dir=fake_seg_dir)
    assert data.kind is SEGMENTATION and data.num_outputs == 2
    for split in (data.train, data.val, data.test):
        for image, label, mask in zip(split.x, split.y, split.mask):
            expected = torch.zeros(28, 28, dtype=torch.int64)
            expected[stripe_rows(int(label)), 4:24] = 1
            assert torch.equal(mask, expected)


def test_multi_class_masks_label_each_silhouette_with_its_class(fake_seg_dir):
    binary = load_task("fashion-mnist-seg", "5,7,9", shots=5, data_dir=fake_seg_dir)
    multi = load_task("fashion-mnist-seg-multi", "5,7,9", shots=5, data_dir=fake_seg_dir)
    assert multi.num_outputs == 4 and multi.train.mask_names == ("background", "Sandal", "Sneaker", "Ankle boot")
    assert torch.equal(multi.train.mask > 0, binary.train.mask > 0)  # same shots: same seed, same carve
    assert torch.equal(multi.train.mask.amax(dim=(1, 2)), multi.train.y + 1)


def test_reconstruction_targets_the_images_and_resizing_keeps_labels(fake_seg_dir):
    data = load_task("fashion-mnist", "0-4", shots=3, data_dir=fake_seg_dir, task="reconstruction")
    assert data.kind is RECONSTRUCTION and data.num_outputs == 1
    assert RECONSTRUCTION.targets(data.train) is data.train.x
    big = load_task("fashion-mnist-seg-multi", "0-4", shots=3, data_dir=fake_seg_dir, size=(56, 56))
    assert big.train.mask.shape[1:] == (56, 56) and big.train.x.shape[2:] == (56, 56)
    assert set(big.train.mask.unique().tolist()) <= set(range(6))


def test_masks_are_required_for_segmentation(fake_seg_dir):
    with pytest.raises(DataError, match="no masks"):
        load_task("fashion-mnist", "0-4", shots=3, data_dir=fake_seg_dir, task="segmentation")


def write_segfolder(root, n: int = 12, size=(16, 12), labels=(0, 255)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros(size[::-1], dtype=np.uint8)
        mask[2 : 2 + i % 5 + 3, 3:9] = labels[1 + i % (len(labels) - 1)]
        image = (rng.integers(0, 30, size[::-1]) + (mask > 0) * 200).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"img{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i:02d}.png")
    return root


def test_segfolder_reads_binary_and_label_masks(tmp_path):
    root = write_segfolder(tmp_path / "binary")
    data = load_task(f"segfolder:{root}", shots=None, val_per_class=2)
    assert data.kind is SEGMENTATION and data.num_outputs == 2 and data.size == (12, 16)
    assert len(data.train) + len(data.val) + len(data.test) == 12
    assert set(data.train.mask.unique().tolist()) == {0, 1}  # 0/255 read as binary
    image = np.asarray(Image.open(root / "images" / "img00.png"))
    assert data.train.mask.shape[1:] == image.shape
    labelled = load_task(f"segfolder:{write_segfolder(tmp_path / 'labels', labels=(0, 1, 2))}", val_per_class=2)
    assert labelled.num_outputs == 3


def test_segfolder_errors_name_the_file(tmp_path):
    root = write_segfolder(tmp_path / "missing")
    (root / "masks" / "img03.png").unlink()
    with pytest.raises(DataError, match=r"no mask for 1 image\(s\) \(img03\)"):
        load_task(f"segfolder:{root}")
    root = write_segfolder(tmp_path / "size")
    Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(root / "masks" / "img04.png")
    with pytest.raises(DataError, match=r"img04.png: mask is 5x5 but its image is 16x12"):
        load_task(f"segfolder:{root}")
    with pytest.raises(DataError, match="no masks/ folder"):
        (tmp_path / "nomasks" / "images").mkdir(parents=True)
        load_task(f"segfolder:{tmp_path / 'nomasks'}")


# ---- models and alignment --------------------------------------------------------------


def test_permuted_unet_aligns_back_to_distance_zero_and_reproduces_its_outputs():
    torch.manual_seed(0)
    model = randomize_norms(build_model(UNET, 1, 3), 1).eval()
    spec = permutation_spec(model)
    # the first up stage reads the upsampled bottleneck and the skip of down.1 side by side
    assert spec.group_of("up.0.0.0.weight", 1) is not None
    permuted = apply_permutation(copy.deepcopy(model), spec, random_permutation(spec, seed=2))
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert (permuted(x) - model(x)).abs().max() < 1e-5
    comparison = compare_models(permuted, model, align="weights")
    assert max(r.rmse_raw for r in comparison.layers) > 0.1
    assert max(r.rmse for r in comparison.layers) < 1e-6
    assert max_param_diff(comparison.aligned_source, model) < 1e-6
    with torch.no_grad():
        assert (comparison.aligned_source(x) - model(x)).abs().max() < 1e-5


def test_smp_pspnet_pyramid_pooling_keeps_permutations_consistent():
    torch.manual_seed(0)
    model = randomize_norms(build_model("smp:PSPNet/resnet18", 1, 3), 1).eval()
    x = torch.randn(2, 1, 32, 32)
    spec = permutation_spec(model, x)
    permuted = apply_permutation(copy.deepcopy(model), spec, random_permutation(spec, seed=1))
    with torch.no_grad():
        assert (permuted(x) - model(x)).abs().max() < 1e-4 * (model(x).abs().max() + 1)
    assert max_param_diff(align_models(permuted, model, "weights", example_input=x).model, model) < 1e-6


def test_wrong_architecture_or_size_is_one_clear_error(fake_seg_dir, tmp_path):
    base = ["train", "--data", "fashion-mnist-seg", "--classes", "0-4", "--shots", "2", "--epochs", "1",
            "--data-dir", str(fake_seg_dir), "--device", "cpu", "--quiet"]  # fmt: skip
    result = runner.invoke(app, [*base, "--arch", "builtin:cnn", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "use a segmentation architecture such as builtin:unet" in result.output
    result = runner.invoke(app, [*base, "--arch", "smp:PSPNet/resnet18", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "cannot take 1x28x28 images" in result.output and "--size 32" in result.output
    assert "Traceback" not in result.output


# ---- every stage on each task -------------------------------------------------------------

QUICK = TrainConfig(epochs=1, batch_size=32, lr=1e-2, min_steps=40)
FEW = TrainConfig(epochs=1, batch_size=8, lr=1e-2, optimizer="sgd", min_steps=6)


@pytest.fixture(scope="module", params=["segmentation", "reconstruction"])
def unet_pair(request, fake_seg_dir, tmp_path_factory):
    """S trained on classes 0-4 and T fine-tuned from it on 5 shots of classes 5-9, for one task."""
    task = request.param
    out = tmp_path_factory.mktemp(task)
    data = "fashion-mnist-seg" if task == "segmentation" else "fashion-mnist"
    common = {"data_dir": fake_seg_dir, "task": task, "test_per_class": 5, "val_per_class": 5}
    source_data = load_task(data, "0-4", limit_per_class=20, **common)
    target_data = load_task(data, "5-9", shots=5, **common)
    s, s_rec = run_training(RunSpec(UNET, QUICK), source_data, out / "S")
    t, t_rec = run_training(RunSpec(UNET, FEW, init=str(out / "S" / "model.safetensors")), target_data, out / "T")
    return task, out, s, t, target_data, s_rec, t_rec


def test_training_records_the_task_metric(unet_pair):
    task, out, _, _, _, s_rec, _ = unet_pair
    metric, extra = ("dice", "iou") if task == "segmentation" else ("psnr", "ssim")
    assert s_rec["metric"] == metric and set(s_rec["test_metrics"]) == {metric, extra}
    if task == "segmentation":
        assert 0.5 < s_rec["test_metric"] <= 1.0  # the stripe silhouettes are easy
    else:
        assert s_rec["test_metric"] > 10.0  # dB, well above an all-zero output
    _, info = load_checkpoint(out / "T" / "model.safetensors")
    assert info.task == task and info.arch == UNET


def test_sweep_cached_equals_naive_on_the_unet(unet_pair):
    _, _, s, t, data, _, _ = unet_pair
    config = SweepConfig(params=("conv.weight", "bn.stats", "unit"), adaptive=False, bootstrap=50)
    cached = replacement_sweep(s, t, data.val, data.train, config, task=data.kind)
    naive = replacement_sweep(s, t, data.val, data.train, SweepConfig(**{**config.to_dict(), "cached": False}), task=data.kind)
    assert cached.mode != naive.mode
    assert len(cached.rows) == len(naive.rows) > 20
    for a, b in zip(cached.rows, naive.rows):
        assert a.value == pytest.approx(b.value, abs=1e-6), a.id
    identity = replacement_sweep(t, t, data.val, data.train, config, task=data.kind)
    assert all(abs(r.drop) < 1e-9 for r in identity.rows if not r.recalibrated)


def test_compare_replace_plan_on_the_unet(unet_pair, tmp_path):
    task, _, s, t, data, _, _ = unet_pair
    config = SweepConfig(params=("conv.weight", "bn.weight", "bn.bias", "bn.stats"), bootstrap=50)
    result = assess(s, t, data, tmp_path, sweep_config=config)
    plan = json.loads((tmp_path / "plan.json").read_text())
    names = [layer["name"] for layer in plan["layers"]]
    assert names[:2] == ["down.0.0.0", "down.0.1.0"] and "up.1.1.0" in names and names[-1] == "head"
    assert plan["layers"][-1]["decision"] == "reinit"
    assert result.comparison.lineage == "finetuned"
    # tolerances default to the task's: 2 points of Dice, 0.5 dB of PSNR
    tolerance = 0.02 if task == "segmentation" else 0.5
    assert plan["thresholds"]["network_tolerance"] == plan["thresholds"]["layer_tolerance"] == tolerance
    assert result.sweep.config.tolerance == tolerance
    replacement = json.loads((tmp_path / "replacement.json").read_text())
    assert replacement["metric"] == ("dice" if task == "segmentation" else "psnr")
    groups = {r["params"] for r in replacement["rows"]}
    assert groups == {"conv.weight", "bn.weight", "bn.bias", "bn.stats"}


def test_transfer_grid_on_the_unet(unet_pair, fake_seg_dir, tmp_path):
    task, _, s, _, _, _, _ = unet_pair
    data = "fashion-mnist-seg" if task == "segmentation" else "fashion-mnist"
    plan = {name: "reuse-frozen" for name in ("down.0.0.0", "down.0.1.0")}
    config = TransferConfig(strategies=("scratch", "finetune-all", "plan"), shots=(3,), seeds=2, training=FEW, test_per_class=5)
    doc = run_transfer(Source(UNET, s.state_dict()), plan, data, "5-9", RunContext(tmp_path), config=config, data_dir=str(fake_seg_dir),
                       task=task)  # fmt: skip
    assert doc["metric"] == ("dice" if task == "segmentation" else "psnr")
    assert set(doc["strategies"]) == {"scratch", "finetune-all", "plan"}
    runs = [e["runs"] for e in doc["strategies"].values()]
    assert all(len(r) == 2 and all(math.isfinite(v) for v in r) for r in runs)


def test_study_from_an_autoencoder_to_segmentation(fake_seg_dir, tmp_path):
    config = tmp_path / "ae.toml"
    config.write_text(f"""
arch = "{UNET}"
test_per_class = 5
[source]
data = "fashion-mnist"
task = "reconstruction"
classes = "0-4"
limit_per_class = 20
[target]
data = "fashion-mnist-seg"
classes = "5-9"
shots = 3
[training.source]
epochs = 2
batch_size = 32
lr = 0.005
[training.fewshot]
min_steps = 6
batch_size = 8
[training.full]
epochs = 1
batch_size = 32
[sweep]
params = ["conv.weight", "bn.stats"]
bootstrap = 50
[transfer]
seeds = 2
strategies = ["scratch", "finetune-all", "plan"]
""")
    result = runner.invoke(app, ["study", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cpu",
                                 "--data-dir", str(fake_seg_dir), "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["tasks"] == {"source": "reconstruction", "target": "segmentation"}
    assert results["metric"] == "dice" and results["models"]["source"]["metric"] == "psnr"
    models, gains = results["models"], results["gains"]  # gains: per-image Dice differences on the same test set
    for a, b in (("target", "scratch"), ("full", "scratch")):
        assert gains[f"{a}_vs_{b}"]["mean"] == pytest.approx(models[a]["test_metric"] - models[b]["test_metric"], abs=1e-9)
    assert set(results["transfer"]["strategies"]) == {"scratch", "finetune-all", "plan"}
    assert (tmp_path / "run" / "report.html").is_file()
