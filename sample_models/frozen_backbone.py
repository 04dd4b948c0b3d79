"""A frozen feature extractor with a trainable head (transfer-learning style).

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. The
backbone's parameters have requires_grad=False, so they receive no gradient at all:
a diagnosis must tell "frozen on purpose" apart from "vanished".
"""

from __future__ import annotations

import torch
from torch import nn


class FrozenBackbone(nn.Module):
    """Frozen [Conv -> ReLU] x 2 -> trainable Linear -> ReLU -> Linear(classes)."""

    def __init__(self, channels: int = 8, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
        )
        self.backbone.requires_grad_(False)
        self.head = nn.Sequential(
            nn.Linear(channels * 8 * 8, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).flatten(1))
