"""A small ResNet: residual blocks with in-place ReLU and an in-place add.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. The
identity path of each block carries the gradient straight back to the block's input,
and ReLU does not saturate, so the first layers receive gradients of the same order as
the last ones: a healthy network to compare the sick ones against.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN, plus the input, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        y += x  # in place, as torchvision's ResNet does
        return self.relu2(y)


class ResidualNet(nn.Module):
    """Stem conv -> `blocks` residual blocks -> global average pool -> Linear(classes)."""

    def __init__(
        self, blocks: int = 4, channels: int = 16, in_channels: int = 1, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))
