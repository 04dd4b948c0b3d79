"""The probe's device kernels: norms and histograms (activations: probe_activations).

Everything here returns device tensors (0-d or 1-d) and never reads one back to
the host: the probe stacks them and copies the lot once per sampled step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

HIST_BINS = 40
# log10|grad| histograms use fixed edges so histograms of different steps compare;
# values outside are clamped into the end bins.
GRAD_LOG_RANGE = (-16.0, 4.0)
LOW_PRECISION = (torch.float16, torch.bfloat16)
# A power of two (exact in every float format) far below any margin between two
# float32 numbers near a saturation bound, and far above the smallest normal number.
TINY = 2.0**-100
# torch's float32 CPU norm accumulates in one long chain: its relative error grows
# with the length (2e-6 at 2**18 elements, 1e-2 at 1e8). Above this size a norm is
# taken per row of CHUNK elements (each accurate to ~1e-7) and the rows are added in
# float64, which keeps 1e8 elements at ~1.5e-7 for the price of one extra tiny kernel.
LONG_NORM = 1 << 16
CHUNK = 1 << 14
# Element-wise temporaries (|g|, log10|g|) of larger tensors are made a piece of this
# size at a time, so the probe's extra memory stays far below the model's.
TEMPORARY = 1 << 20


def foreach_norm(tensors: list[torch.Tensor], ord: float = 2.0) -> list[torch.Tensor]:
    """L2 (or L1) norms, one fused kernel per group where the tensors are small."""
    if not tensors:
        return []
    long = {k for k, t in enumerate(tensors) if t.numel() > LONG_NORM and t.device.type == "cpu"}
    if long:
        short = iter(_fused_norm([t for k, t in enumerate(tensors) if k not in long], ord))
        return [_chunked_norm(t, ord) if k in long else next(short)
                for k, t in enumerate(tensors)]
    return _fused_norm(tensors, ord)


def _fused_norm(tensors: list[torch.Tensor], ord: float) -> list[torch.Tensor]:
    # One fused kernel launch per dtype/device group where available; the fallback
    # gives the same numbers one tensor at a time. 16-bit tensors are summed in float32.
    if not tensors:
        return []
    dtype = torch.float32 if all(t.dtype in LOW_PRECISION for t in tensors) else None
    try:
        return list(torch._foreach_norm(tensors, ord, dtype=dtype))
    except (AttributeError, RuntimeError, TypeError):
        return [torch.linalg.vector_norm(t, ord, dtype=dtype) for t in tensors]


def _chunked_norm(t: torch.Tensor, ord: float) -> torch.Tensor:
    flat = t.reshape(-1)
    dtype = torch.float32 if t.dtype in LOW_PRECISION else None
    whole = flat.numel() - flat.numel() % CHUNK
    rows = torch.linalg.vector_norm(flat[:whole].view(-1, CHUNK), ord, dim=1, dtype=dtype)
    tail = flat[whole:].double()
    if ord == 1.0:
        return (rows.double().sum() + tail.abs().sum()).to(rows.dtype)
    return (rows.double().square().sum() + tail.square().sum()).sqrt().to(rows.dtype)


def l1_norms(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    # On the CPU abs().sum() is vectorised, pairwise (accurate at any size) and about
    # twice as fast as an ord=1 norm; on accelerators the fused kernel is one launch.
    if tensors and tensors[0].device.type != "cpu":
        return foreach_norm(tensors, 1.0)
    return [_abs_sum(t) for t in tensors]


def _abs_sum(t: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if t.dtype in LOW_PRECISION else None
    if t.numel() <= TEMPORARY:
        return t.abs().sum(dtype=dtype)
    # |t| of a huge tensor is a temporary as large as the parameter: a piece at a time.
    flat = t.reshape(-1)
    return torch.stack([c.abs().sum(dtype=dtype) for c in flat.split(TEMPORARY)]).sum()


def dense_grad(g: torch.Tensor) -> torch.Tensor:
    """What a norm can read of a gradient: a sparse one's (coalesced) stored values."""
    if g.is_sparse:
        return g.coalesce().values()
    if g.layout != torch.strided:  # sparse CSR and friends
        return g.to_dense()
    return g


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor to watch in a module's output (RNNs return (output, hidden))."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor) and item.is_floating_point():
                return item
    return None


def wide_dtype(device: torch.device) -> torch.dtype:
    """float64 for sums that float32 cannot hold, where the device has it (Apple's MPS
    has not: float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


# A vanishing gradient through time reaches 1e-25 and less per element at the early
# steps, whose squares are below float32's range: the norms are summed in float64
# (wide_dtype), then held in float32, which holds the result, so they do not read 0.
def time_norms(grad: torch.Tensor, time_dim: int) -> torch.Tensor:
    """||dLoss/dx_t|| for every time step t of a sequence gradient."""
    g = grad.detach()
    dims = [d for d in range(g.dim()) if d != time_dim]
    if not dims:
        return g.float().abs() if g.dtype in LOW_PRECISION else g.abs()
    out = torch.linalg.vector_norm(g, dim=dims, dtype=wide_dtype(g.device))
    return out.float() if g.dtype != torch.float64 else out


def packed_time_index(batch_sizes: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The time step of every row of a PackedSequence's data, on `device`.

    batch_sizes (a CPU tensor) says how many rows each time step holds: the first
    batch_sizes[0] rows are t=0, the next batch_sizes[1] rows t=1, and so on. The
    index is built on the host, once per forward call, and copied without a host sync
    (from pinned memory, asynchronously) where the data is on a CUDA device.
    """
    steps = torch.arange(batch_sizes.numel(), dtype=torch.int64)
    index = torch.repeat_interleave(steps, batch_sizes.to(torch.int64))
    if device.type == "cpu":
        return index
    if device.type == "cuda":
        return index.pin_memory().to(device, non_blocking=True)
    return index.to(device)


def packed_time_norms(grad: torch.Tensor, index: torch.Tensor, steps: int) -> torch.Tensor:
    """||dLoss/dx_t|| for every time step t of a PackedSequence's data gradient.

    `index` (packed_time_index) gives each row's time step; the norm of step t is over
    its rows, the sequences still running at t. One segment sum of the rows' squared
    norms, no loop over time steps, in float64 (see time_norms).
    """
    g = grad.detach()
    g = g.reshape(g.shape[0], -1)
    rows = torch.linalg.vector_norm(g, dim=1, dtype=wide_dtype(g.device)).square()
    sums = torch.zeros(steps, dtype=rows.dtype, device=rows.device)
    out = sums.index_add_(0, index, rows).sqrt()
    return out.float() if g.dtype != torch.float64 else out


def histograms(
    weights: list[tuple[int, torch.Tensor]],
    grads: dict[int, list[torch.Tensor]],
    layers: Iterable[int],
    sharded: bool,
    device: torch.device,
    grad_hists: tuple[list[torch.Tensor], list[tuple[str, int, float, float]]] | None = None,
) -> tuple[list[torch.Tensor], list[tuple[str, int, float, float]]]:
    """Weight and log10|grad| histograms per layer, computed on the device (the
    gradients' taken already where `grad_hists` holds them)."""
    parts: list[torch.Tensor] = []
    meta: list[tuple[str, int, float, float]] = []
    # The weight range needs the current max |w|: one extra, small host copy on
    # histogram steps only (they are a fraction of the sampled steps).
    if weights:
        ext = torch.stack([torch.stack(torch.aminmax(w)).float().abs().max()
                           if w.numel() else torch.zeros((), device=w.device)
                           for _, w in weights])
        if sharded:
            torch.distributed.all_reduce(ext, op=torch.distributed.ReduceOp.MAX)
        for (li, w), m in zip(weights, ext.cpu().tolist()):
            m = m if m > 0 and math.isfinite(m) else 1.0
            # max |w| is in the data, so [-m, m] holds every weight: no clamp needed.
            parts.append(torch.histc(w.float(), HIST_BINS, -m, m))
            meta.append(("weight", li, -m, m))
    grad_parts, grad_meta = (grad_hists if grad_hists is not None
                             else grad_histograms(grads, layers, device))
    return parts + grad_parts, meta + grad_meta


def grad_histograms(
    grads: dict[int, list[torch.Tensor]],
    layers: Iterable[int],
    device: torch.device,
    scale: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], list[tuple[str, int, float, float]]]:
    """log10|grad| histograms per layer, of the gradients divided by `scale` (a loss
    scaler's, on the device) where given."""
    lo, hi = GRAD_LOG_RANGE
    parts: list[torch.Tensor] = []
    meta: list[tuple[str, int, float, float]] = []
    for li in layers:
        gs = grads.get(li)
        if not gs:  # a rank may hold no slice of a layer: it still adds zeros
            parts.append(torch.zeros(HIST_BINS, device=device))
        else:
            parts.append(_log_abs_histogram(gs, lo, hi, scale))
        meta.append(("grad", li, lo, hi))
    return parts, meta


def _log_abs_histogram(gs: list[torch.Tensor], lo: float, hi: float,
                       scale: torch.Tensor | None = None) -> torch.Tensor:
    """Counts of log10|g / scale| over the gradients `gs`, a bounded piece at a time."""
    def magnitudes(g: torch.Tensor) -> torch.Tensor:  # g: a fresh float tensor, |.| taken
        return g if scale is None else g.div_(scale)  # exact for a power-of-two scale

    pieces = [c for g in gs for c in g.reshape(-1).split(TEMPORARY)]
    if len(pieces) == 1 or sum(c.numel() for c in pieces) <= TEMPORARY:
        g = magnitudes(torch.cat(pieces).float().abs_()).clamp_min_(1e-30).log10_()
        return torch.histc(g.clamp_(lo, hi), HIST_BINS, lo, hi)
    counts = torch.zeros(HIST_BINS, device=pieces[0].device)
    for c in pieces:
        g = magnitudes(c.float().abs()).clamp_min_(1e-30).log10_().clamp_(lo, hi)
        counts += torch.histc(g, HIST_BINS, lo, hi)
    return counts


def stack(scalars: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """0-d tensors -> one float64 vector on `device` (one kernel when they share it)."""
    if not scalars:
        return torch.zeros(0, device=device, dtype=torch.float64)
    try:
        return torch.stack(scalars).to(torch.float64)
    except RuntimeError:  # a model split across devices
        return torch.stack([t.to(device) for t in scalars]).to(torch.float64)
