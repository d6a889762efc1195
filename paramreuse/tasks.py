"""Tasks: what the model's outputs are trained against, the loss, and the metric (torchmetrics).

- ``classification``: one label per image; cross-entropy; accuracy.
- ``segmentation``: one label per pixel; per-pixel cross-entropy (``segmentation-dice``: Dice
  loss); Dice of the foreground classes, and mean IoU, per image.
- ``reconstruction``: the image itself (auto-encoding); MSE; PSNR in dB, and SSIM.

Every metric is the mean of per-image scores, so that paired bootstrap intervals and the
sweep's early stopping work the same way for all three.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.functional.segmentation import dice_score, mean_iou

from paramreuse.errors import DataError, SpecError

PIXEL_RANGE = 2.0  # images live in [-1, 1]
# Range of each metric's values (None: unbounded), as torchmetrics metrics carry theirs. PSNR is
# unbounded: a reconstruction is not clamped to the pixel range, so its PSNR can fall below 0 dB.
METRIC_BOUNDS: dict[str, tuple[float, float] | None] = {
    "accuracy": (0.0, 1.0), "dice": (0.0, 1.0), "iou": (0.0, 1.0), "ssim": (-1.0, 1.0), "psnr": None,
}  # fmt: skip


def metric_bounds(name: str) -> tuple[float, float] | None:
    """The range of a metric's values, or None when it is unbounded or unknown."""
    return METRIC_BOUNDS.get(name)


@dataclass(frozen=True)
class Task:
    """A task knows its targets, loss and metric, whether higher is better, the metric's units and bounds."""

    name: str
    metric_name: str
    higher_is_better: bool
    units: str
    extra_metric: str | None = None
    loss_name: str = "cross-entropy"
    tolerance: float = 0.02  # default reusable drop, in the metric's units (2 points of a fraction)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The metric's range: (0, 1) for accuracy and Dice, None for PSNR (for clipping CIs)."""
        return metric_bounds(self.metric_name)

    @property
    def extra_bounds(self) -> tuple[float, float] | None:
        """The secondary metric's range (IoU: (0, 1), SSIM: (-1, 1)), or None."""
        return metric_bounds(self.extra_metric) if self.extra_metric else None

    def targets(self, data) -> torch.Tensor:
        """What the outputs are compared with: labels, masks, or the images themselves."""
        if self.name == "segmentation":
            if data.mask is None:
                raise DataError("a segmentation task needs masks; use fashion-mnist-seg, fashion-mnist-seg-multi or segfolder:PATH")
            return data.mask
        if self.name == "reconstruction":
            return data.x
        return data.y

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "mse":
            return F.mse_loss(outputs, targets)
        if self.loss_name == "dice":
            return _dice_loss(outputs, targets)
        return F.cross_entropy(outputs, targets)

    def scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-image scores whose mean is the metric (for paired bootstrap CIs and early stopping)."""
        if self.name == "segmentation":
            return _per_image(dice_score, outputs, targets)
        if self.name == "reconstruction":
            return peak_signal_noise_ratio(outputs, targets, data_range=PIXEL_RANGE, reduction="none", dim=(1, 2, 3)).double()
        return (outputs.argmax(1) == targets).to(torch.float64)

    def extra_scores(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor | None:
        """Per-image values of the secondary metric (IoU, SSIM), or None."""
        if self.name == "segmentation":
            return _per_image(mean_iou, outputs, targets)
        if self.name == "reconstruction":
            return structural_similarity_index_measure(outputs, targets, data_range=PIXEL_RANGE, reduction="none").double()
        return None

    def value(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(self.scores(outputs, targets).mean())

    def out_channels(self, data) -> int:
        """Channels of the model's output for ``data`` (a TaskData)."""
        if self.name == "segmentation":
            return len(data.train.mask_names)
        if self.name == "reconstruction":
            return data.channels
        return data.num_classes


def _per_image(fn, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A foreground segmentation score per image; an image with no foreground in either map scores 1."""
    num_classes = int(outputs.shape[1])
    with warnings.catch_warnings():  # torchmetrics announces a change of its default; we pass ours
        warnings.simplefilter("ignore", UserWarning)
        kwargs = {"average": "micro"} if fn is dice_score else {}
        values = fn(outputs.argmax(1), targets, num_classes=num_classes, include_background=False,
                    input_format="index", **kwargs).double()  # fmt: skip
    return torch.nan_to_num(values, nan=1.0)


def _dice_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from segmentation_models_pytorch.losses import DiceLoss  # optional heavy dependency: only Dice training needs it

    return DiceLoss(mode="multiclass", from_logits=True)(outputs, targets)


CLASSIFICATION = Task("classification", "accuracy", higher_is_better=True, units="fraction")
SEGMENTATION = Task("segmentation", "dice", higher_is_better=True, units="fraction", extra_metric="iou")
SEGMENTATION_DICE = Task("segmentation", "dice", True, "fraction", extra_metric="iou", loss_name="dice")
RECONSTRUCTION = Task("reconstruction", "psnr", higher_is_better=True, units="dB", extra_metric="ssim", loss_name="mse",
                      tolerance=0.5)  # fmt: skip
TASKS = {"classification": CLASSIFICATION, "segmentation": SEGMENTATION, "segmentation-dice": SEGMENTATION_DICE,
         "reconstruction": RECONSTRUCTION}  # fmt: skip


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SpecError(f"unknown task {name!r}; use one of {', '.join(TASKS)}")
    return TASKS[name]


def task_key(task: Task) -> str:
    """The name ``get_task`` takes back."""
    return next(k for k, v in TASKS.items() if v == task)
