"""A deep stack of 3x3 convolutions with sigmoid after each: a textbook vanishing-gradient CNN.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes.
Each sigmoid passes back at most a quarter of the gradient it receives, and PyTorch's
default initialisation keeps the convolution weights small, so the gradient that
reaches the first convolution is orders of magnitude smaller than at the last layer.
"""

from __future__ import annotations

import torch
from torch import nn


class DeepSigmoidCNN(nn.Module):
    """depth x [Conv2d(3x3, padding 1) -> Sigmoid] -> Flatten -> Linear(classes)."""

    def __init__(
        self,
        depth: int = 6,
        channels: int = 16,
        in_channels: int = 1,
        image_size: int = 8,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [
                nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1),
                nn.Sigmoid(),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))
