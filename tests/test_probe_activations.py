"""Activation statistics (probe_activations) against float64 computations of the same outputs."""

from __future__ import annotations

import math

import pytest
import torch

from vgdiag.engine.probe_activations import (
    CPU_PIECE,
    SATURATION_EPS,
    Scratch,
    activation_stats,
)
from vgdiag.engine.probe_kernels import TINY


def reference(x: torch.Tensor, kind: int) -> tuple[float, float, float]:
    """mean, ||x - mean|| and the saturated count, in float64 with comparisons."""
    d = x.double()
    mean = d.mean()
    dist = float((d - mean).norm())
    if kind == 1:
        count = float(((d < SATURATION_EPS) | (d > 1 - SATURATION_EPS)).sum())
    elif kind == 2:
        count = float((d.abs() > 1 - SATURATION_EPS).sum())
    else:
        count = math.nan
    return float(mean), dist, count


def measured(x: torch.Tensor, kind: int, relu: bool = False, channel_dim: int = -1,
             scratch: Scratch | None = None) -> tuple[int, int, list[float]]:
    n, units, parts = activation_stats(x, kind, relu, channel_dim, scratch)
    return n, units, [float(t) for t in parts]


@pytest.mark.parametrize("numel", [1000, CPU_PIECE, 3 * CPU_PIECE + 17])
def test_sigmoid_outputs_match_float64_in_one_piece_or_many(numel):
    torch.manual_seed(0)
    x = torch.sigmoid(torch.randn(numel) * 4 + 1)  # a good share beyond 0.99
    n, units, (mean, dist, count) = measured(x, 1)
    ref_mean, ref_dist, ref_count = reference(x, 1)
    assert (n, units) == (numel, -1)
    assert mean == pytest.approx(ref_mean, rel=1e-6)
    assert dist == pytest.approx(ref_dist, rel=1e-6)
    assert round(count / TINY) == ref_count > 0


def test_a_saturated_layers_tiny_spread_is_exact():
    # Every output near 1 with a spread of 1e-5: a one-pass variance would cancel to 0.
    torch.manual_seed(1)
    x = (0.995 + 1e-5 * torch.randn(512, 128)).float()
    _, _, (mean, dist, count) = measured(x, 1)
    ref_mean, ref_dist, ref_count = reference(x, 1)
    assert dist == pytest.approx(ref_dist, rel=1e-4)
    assert round(count / TINY) == ref_count == x.numel()


def test_tanh_counts_both_bounds_and_16_bit_outputs_are_summed_in_float32():
    torch.manual_seed(2)
    x = torch.tanh(torch.randn(64, 300) * 3)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        y = x.to(dtype)
        _, _, (mean, dist, count) = measured(y, 2)
        ref_mean, ref_dist, ref_count = reference(y, 2)
        assert mean == pytest.approx(ref_mean, rel=1e-5, abs=1e-6), dtype
        assert dist == pytest.approx(ref_dist, rel=1e-5), dtype
        assert round(count / TINY) == ref_count, dtype


def test_dead_units_per_feature_and_per_channel_without_copying_the_input():
    torch.manual_seed(3)
    feats = torch.relu(torch.randn(32, 10))
    feats[:, [2, 7]] = 0.0
    assert measured(feats, 0, relu=True)[1:] == (10, [pytest.approx(float(feats.mean())),
                                                      pytest.approx(reference(feats, 0)[1]), 2.0])
    conv = torch.relu(torch.randn(4, 6, 5, 5))
    conv[:, 1] = 0.0
    conv = conv[:, :, :, ::2]  # a non-contiguous view, as after slicing
    n, units, parts = measured(conv, 0, relu=True, channel_dim=1)
    assert (n, units, parts[2]) == (conv.numel(), 6, 1.0)
    assert parts[1] == pytest.approx(reference(conv, 0)[1], rel=1e-6)


def test_the_scratch_buffer_is_reused_and_at_most_one_piece():
    scratch = Scratch()
    x = torch.sigmoid(torch.randn(5 * CPU_PIECE))
    first = measured(x, 1, scratch=scratch)
    size = scratch.nbytes()
    assert size == CPU_PIECE * 4
    assert measured(x, 1, scratch=scratch) == first  # the same numbers from the same buffer
    assert scratch.nbytes() == size
