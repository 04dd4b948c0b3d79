"""One Linear layer applied twice (shared weights), with layers kept in a ModuleDict.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. The
shared layer's gradient is the sum of the gradients of both uses, and its forward
hooks fire twice per step: a model for checking that per-layer statistics stay right
when a module is reused.
"""

from __future__ import annotations

import torch
from torch import nn


class SharedWeights(nn.Module):
    """Flatten -> encode -> tanh -> [shared -> tanh] x uses -> decode."""

    def __init__(
        self, width: int = 64, uses: int = 2, in_features: int = 64, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.uses = uses
        self.layers = nn.ModuleDict(
            {
                "encode": nn.Linear(in_features, width),
                "shared": nn.Linear(width, width),
                "decode": nn.Linear(width, num_classes),
            }
        )
        self.act = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.layers["encode"](x.flatten(1)))
        for _ in range(self.uses):
            h = self.act(self.layers["shared"](h))
        return self.layers["decode"](h)
