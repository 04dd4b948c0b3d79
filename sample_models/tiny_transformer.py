"""A tiny vision transformer: patches, attention, LayerNorm and an MLP per block.

Built for 8x8 single-channel images (the built-in `digits` data) and 10 classes. The
image is cut into 2x2 patches (16 tokens) projected by a Linear layer, with learned
positions from an nn.Embedding. Pre-norm blocks with residual paths keep the gradient
flowing; the attention's input projection is a parameter of nn.MultiheadAttention
itself, and its output projection a Linear inside it.
"""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """x + attention(LayerNorm(x)), then x + MLP(LayerNorm(x))."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Patch projection + position embedding -> blocks -> LayerNorm -> mean -> Linear."""

    def __init__(
        self,
        dim: int = 32,
        heads: int = 4,
        layers: int = 2,
        patch: int = 2,
        image_size: int = 8,
        in_channels: int = 1,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.patch = patch
        tokens = (image_size // patch) ** 2
        self.project = nn.Linear(in_channels * patch * patch, dim)
        self.positions = nn.Embedding(tokens, dim)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch
        n, c, height, width = x.shape
        # (N, C, H, W) -> (N, tokens, C*p*p): one row per non-overlapping p x p patch.
        patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
        patches = patches.reshape(n, (height // p) * (width // p), c * p * p)
        index = torch.arange(patches.shape[1], device=x.device)
        h = self.project(patches) + self.positions(index)
        return self.head(self.norm(self.blocks(h)).mean(dim=1))
