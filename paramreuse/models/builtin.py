"""Small built-in networks that train in seconds per epoch on a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class UNet(nn.Module):
    """A small UNet: ``depth`` down stages (two conv+BN+ReLU units, then a 2x2 max pool), a
    bottleneck, and ``depth`` up stages (nearest 2x upsampling, concatenation with the skip of
    the same resolution, two units), then a 1x1 convolution ``head`` giving ``num_classes``
    channels per pixel. Stage i has ``width * 2**i`` channels; sides must be divisible by
    ``2**depth`` (28x28 works with the default depth 2).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 8, depth: int = 2):
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(double_conv(c_in, c) for c_in, c in zip([in_channels, *widths[:-2]], widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = double_conv(widths[-2], widths[-1])
        self.up = nn.ModuleList(double_conv(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for stage in self.down:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for stage, skip in zip(self.up, reversed(skips)):
            x = stage(torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), skip], dim=1))
        return self.head(x)


def build_unet(in_channels: int, num_classes: int, width: int = 8, depth: int = 2) -> nn.Module:
    return UNet(in_channels=in_channels, num_classes=num_classes, width=width, depth=depth)


BUILTIN = {
    "cnn": build_cnn,
    "unet": build_unet,
}
