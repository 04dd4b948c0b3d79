"""A tanh RNN that reads an image row by row (or pixel by pixel) as a sequence.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. The
class scores come from the last hidden state, so the gradient for the first rows has
to travel back through every time step, multiplied by the recurrent weights and a tanh
derivative (at most 1) each time. With `by_pixel=True` the sequence is 64 steps long
and that product shrinks far more.
"""

from __future__ import annotations

import torch
from torch import nn


class RowRNN(nn.Module):
    """nn.RNN(tanh) over the rows (or pixels) of an image, then Linear(classes)."""

    def __init__(
        self,
        hidden: int = 64,
        layers: int = 2,
        width: int = 8,
        num_classes: int = 10,
        by_pixel: bool = False,
    ) -> None:
        super().__init__()
        self.by_pixel = by_pixel
        self.rnn = nn.RNN(
            input_size=1 if by_pixel else width,
            hidden_size=hidden,
            num_layers=layers,
            nonlinearity="tanh",
            batch_first=True,
        )
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C*H, W): one step per row; or (N, C*H*W, 1): one per pixel.
        steps = x.flatten(1).unsqueeze(-1) if self.by_pixel else x.flatten(1, -2)
        outputs, _ = self.rnn(steps)
        return self.head(outputs[:, -1])
