"""Small built-in networks that train in seconds per epoch on a CPU."""

from __future__ import annotations

import torch
from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """A 3x3 convolution, its batch norm and a ReLU: one parametric unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGStyleCNN(nn.Module):
    """VGG-style CNN: three stages of two conv+BN+ReLU units, then a hidden and a head layer.

    With ``width`` w the stages have w, 2w and 4w channels; each stage ends in a 2x2 max pool,
    the features are globally average-pooled, so any input of at least 8x8 pixels works.
    Eight parametric units: six convolutions, ``fc`` and ``head``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w),
            conv_bn_relu(w, w),
            nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w),
            conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(4 * w, 4 * w), nn.ReLU(inplace=True))
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc(self.features(x)))


def build_cnn(in_channels: int, num_classes: int, width: int = 16) -> nn.Module:
    return VGGStyleCNN(in_channels=in_channels, num_classes=num_classes, width=width)


BUILTIN = {
    "cnn": build_cnn,
}
