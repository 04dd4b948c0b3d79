"""An LSTM that reads an image row by row: gates keep the gradient alive through time.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. Set
beside tanh_rnn.py: the LSTM's additive cell state is the recurrent version of a skip
connection.
"""

from __future__ import annotations

import torch
from torch import nn


class RowLSTM(nn.Module):
    """nn.LSTM over the rows of an image, then Linear(classes) on the last hidden state."""

    def __init__(
        self, hidden: int = 64, layers: int = 1, width: int = 8, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.lstm = nn.LSTM(width, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.lstm(x.flatten(1, -2))
        return self.head(outputs[:, -1])
