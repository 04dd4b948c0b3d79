"""A generated 28x28 stand-in for handwritten digits: ten classes of pen strokes.

`vgdiag compare --data sample_models/strokes_data.py:make_data`

Each class is a fixed glyph of three strokes (the same for every seed, so the task
does not change); each image draws it with the strokes' ends jittered, the glyph
shifted and thickened at random and speckle noise added, on a black background like
MNIST's (about 15% of the pixels lit). A linear model gets most of it; the reference's
7-layer sigmoid MLP with PyTorch's default initialisation and plain SGD stays at
chance, as it does on the real digits, while every fix learns it: that is the point.
"""

from __future__ import annotations

import torch

SIZE = 28
CLASSES = 10
STROKES = 3
GLYPH_SEED = 20_240_601  # fixed: the glyphs are the task, the seed only draws samples


def _glyphs() -> torch.Tensor:
    """(CLASSES, STROKES, 2 points, xy) stroke ends in pixel coordinates."""
    g = torch.Generator().manual_seed(GLYPH_SEED)
    return 5.0 + 18.0 * torch.rand((CLASSES, STROKES, 2, 2), generator=g)


def render(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, 1, 28, 28) images in [0, 1] of the glyphs of `labels`, each one perturbed."""
    n = labels.shape[0]
    ends = _glyphs()[labels]  # (N, S, 2, 2)
    ends = ends + 1.2 * torch.randn(ends.shape, generator=generator)
    ends = ends + 2.0 * torch.randn((n, 1, 1, 2), generator=generator)  # shift the glyph
    width = 0.6 + 0.8 * torch.rand((n, 1, 1), generator=generator)
    axis = torch.arange(SIZE, dtype=torch.float32)
    pixels = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(1, 1, -1, 2)
    a, b = ends[:, :, 0:1, :], ends[:, :, 1:2, :]  # (N, S, 1, 2)
    ab = b - a
    t = ((pixels - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)
    nearest = a + t.clamp(0.0, 1.0).unsqueeze(-1) * ab
    distance = (pixels - nearest).norm(dim=-1).min(dim=1).values  # (N, 784)
    ink = (1.0 + width.squeeze(-1) - distance).clamp(0.0, 1.0)
    speckle = (torch.rand(ink.shape, generator=generator) < 0.03).float()
    images = torch.maximum(ink, 0.7 * speckle)
    return images.reshape(n, 1, SIZE, SIZE)


def make_data(
    seed: int = 42, train: int = 9000, val: int = 1000, test: int = 2000
) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(train, val, test) pairs of (images (N, 1, 28, 28) in [0, 1], labels 0..9)."""
    g = torch.Generator().manual_seed(seed)
    splits = []
    for n in (train, val, test):
        labels = torch.randint(0, CLASSES, (n,), generator=g)
        splits.append((render(labels, g), labels))
    return tuple(splits)


def make_small(seed: int = 42) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """A tenth of make_data (900/500/500): enough for a test of a few seconds."""
    return make_data(seed, train=900, val=500, test=500)
