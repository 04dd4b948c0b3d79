"""A model that returns a dict, for --output-key.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes.
Run it with `--output-key logits`; without the key vgdiag stops and lists the keys.
"""

from __future__ import annotations

import torch
from torch import nn


class DictOutput(nn.Module):
    """Flatten -> Linear -> tanh -> Linear; returns {"logits": ..., "features": ...}."""

    def __init__(self, width: int = 64, in_features: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, width), nn.Tanh())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)
        return {"logits": self.head(features), "features": features}
