"""Activation statistics of a sampled step: mean, spread, saturated and dead units.

Taken in a forward hook, right after the activation ran, while its output is still in
the cache. Every element-wise temporary goes into one reused scratch buffer, a piece
of the activation at a time: on a CPU a fresh temporary of a few hundred KB is fresh
memory from the kernel, page-faulted in on first touch, and on the reference MLP two
such temporaries per layer cost more than every other part of the probe together
(74 page faults and 0.7 ms per sampled step). The pieces also bound the probe's extra
memory on large activations (a conv net's can be hundreds of MB) and keep each
float32 reduction short enough to be accurate (see probe_kernels.LONG_NORM).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from vgdiag.engine.probe_kernels import LONG_NORM, LOW_PRECISION, TINY, wide_dtype
from vgdiag.engine.probe_layers import DEAD_BELOW_ZERO, SATURATING_01, SATURATING_11

# Outputs within this distance of a bound count as saturated: sigmoid < 0.01 means a
# pre-activation below -4.6, where the derivative is under 0.01 (a 25x loss vs. 0).
SATURATION_EPS = 1e-2
# Elements per piece: on a CPU one float32 norm stays accurate to ~1e-7 up to LONG_NORM
# elements and a piece that size (256 KB) stays in L2; accelerators reduce in trees and
# pay per launch, so they take large pieces.
CPU_PIECE = LONG_NORM
DEVICE_PIECE = 1 << 24


def activation_kind(module: nn.Module) -> tuple[int, bool]:
    """(1: saturates in (0, 1), 2: in (-1, 1), 0: neither; zero gradient at <= 0)."""
    dead = isinstance(module, DEAD_BELOW_ZERO)
    if dead:  # ReLU6 is a Hardtanh subclass, but its bounds are 0 and 6
        return 0, True
    kind = (1 if isinstance(module, SATURATING_01) else
            2 if isinstance(module, SATURATING_11) else 0)
    return kind, False


class Scratch:
    """One reused buffer per dtype, device and thread (DataParallel runs replicas'
    forward passes in threads), at most one piece long."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[torch.dtype, torch.device, int], torch.Tensor] = {}
        self._constants: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}

    def get(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        # Traced by torch.compile (hooks inside a compiled forward), the key is fixed:
        # Dynamo cannot trace get_ident, and a compiled graph runs in one thread.
        tid = 0 if torch.compiler.is_compiling() else threading.get_ident()
        key = (dtype, device, tid)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._buffers[key] = buf
        return buf[:numel]

    def constant(self, value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A 0-d tensor of `value`, made once (addcmul takes its addend as a tensor)."""
        key = (value, dtype, device)
        t = self._constants.get(key)
        if t is None:
            t = self._constants[key] = torch.full((), value, dtype=dtype, device=device)
        return t

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers.values())


def _into(buf: torch.Tensor, piece: torch.Tensor, minus: torch.Tensor | float) -> torch.Tensor:
    """buf = piece - minus, computed in buf's dtype (float32 for 16-bit pieces)."""
    if piece.dtype == buf.dtype:
        return torch.sub(piece, minus, out=buf)
    return buf.copy_(piece).sub_(minus)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """The wide dtype for adding up pieces (probe_kernels.wide_dtype)."""
    return t.to(wide_dtype(t.device))


def _total(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else _wide(torch.stack(parts)).sum()


def _saturated(buf: torch.Tensor, piece: torch.Tensor, kind: int, scratch: Scratch) -> torch.Tensor:
    """The piece's saturated count times TINY: sum of clamp((x - c)^2 - m^2, 0, TINY).

    (x - c)^2 > m^2 is |x - c| > m, the output within SATURATION_EPS of a bound;
    clamping maps saturated outputs to exactly TINY and the rest to 0, so the sum is
    the count times TINY (comparisons and heaviside are several times slower on the
    CPU). Expanded as x*x + (c^2 - m^2) - 2c*x it is one addcmul, and one subtraction
    for sigmoid's c = 1/2, instead of a subtraction, abs, subtraction and square.
    """
    centre, margin = (0.5, 0.5 - SATURATION_EPS) if kind == 1 else (0.0, 1.0 - SATURATION_EPS)
    if piece.dtype == buf.dtype:
        addend = scratch.constant(centre * centre - margin * margin, buf.dtype, buf.device)
        out = torch.addcmul(addend, piece, piece, out=buf)
        if centre:
            out.sub_(piece, alpha=2 * centre)
    else:  # 16-bit: square in float32, where the margin is exact
        out = buf.copy_(piece).sub_(centre)
        out.mul_(out).sub_(margin * margin)
    return out.clamp_(0.0, TINY).sum()


def activation_stats(
    out: torch.Tensor, kind: int, relu: bool, channel_dim: int = -1,
    scratch: Scratch | None = None,
) -> tuple[int, int, list[torch.Tensor]]:
    """Device scalars of an activation's output: (numel, units, [mean, dist, ...]).

    dist is ||x - mean||. `units` is -1 when a saturated count follows (sigmoid/tanh
    family; the count times TINY), the number of units when a dead-unit count follows
    (ReLU family), 0 when neither does. A unit is a feature (the last axis) or, after
    a convolution, a channel (axis 1): a channel whose every position is <= 0 for
    every sample is dead. Two passes (the mean, then the distance to it) keep the std
    exact for saturated layers, where it is tiny next to the mean. Only vectorised
    float kernels are used: comparisons make boolean tensors, several times slower.
    """
    x = out if out.is_floating_point() else out.float()
    work_dtype = torch.float32 if x.dtype in LOW_PRECISION else x.dtype
    flat = x.reshape(-1)
    n = flat.numel()
    size = CPU_PIECE if x.device.type == "cpu" else DEVICE_PIECE
    # One piece is the common case (a layer's output below 256 KB): no list to build.
    pieces = (flat,) if n <= size else flat.split(size)
    sum_dtype = torch.float32 if x.dtype in LOW_PRECISION else None
    mean = (flat.mean(dtype=sum_dtype) if len(pieces) == 1 else
            _total([p.sum(dtype=sum_dtype) for p in pieces]) / n)
    scratch = scratch or Scratch()
    norms, saturated = [], []
    for piece in pieces:
        buf = scratch.get(piece.numel(), work_dtype, x.device)
        norms.append(torch.linalg.vector_norm(_into(buf, piece, mean)))
        if kind:
            saturated.append(_saturated(buf, piece, kind, scratch))
    dist = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(_wide(torch.stack(norms)))
    tensors = [mean, dist]
    units = 0
    if kind:
        tensors.append(_total(saturated))
        units = -1
    elif relu and x.dim() >= 2 and x.shape[0] > 0:
        if channel_dim == 1 and x.dim() >= 3:
            per_unit = x.amax(dim=[d for d in range(x.dim()) if d != 1])
        else:
            per_unit = x.reshape(-1, x.shape[-1]).amax(dim=0)
        tensors.append(per_unit.le(0).sum())
        units = int(per_unit.numel())
    return n, units, tensors
