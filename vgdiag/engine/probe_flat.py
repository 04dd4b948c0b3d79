"""Every parameter statistic of a sampled step in a handful of kernels.

On a CPU a small model's sampled step is dominated by the fixed cost of each tensor
operation, not by its arithmetic: five statistics (gradient L2 and L1, ||W||,
||W - W0||, ||dW||) for each of a few dozen parameters are a few hundred operations.
Here the parameters' W0, the weights before an update and a scratch buffer are each
one flat buffer, in which every parameter starts on a row of ROW elements and its
last row is padded with zeros. One row-wise reduction over a buffer then serves
every parameter at once, and the rows are added per parameter in float64 (one small
`index_add_`): for each statistic a few kernels whatever the number of parameters.

The rows also keep the sums accurate: torch's float32 CPU norm accumulates in one
long chain, whose relative error grows with its length; a row of ROW elements is
accurate to ~1e-7 and the rows are added in float64. ||W - W0|| is the norm of the
difference (taken exactly in float32 when W is near W0), never ||W||^2 + ||W0||^2 -
2<W, W0>, which cancels to nothing for a layer that has barely moved.

Used where every parameter is held whole, in one dtype on one device, and not
sharded (vgdiag.engine.snapshots samples large parameters; probe_distributed adds
shards across ranks): elsewhere the probe takes the per-tensor path.
"""

from __future__ import annotations

import numpy as np
import torch

from vgdiag.engine.probe_kernels import LOW_PRECISION

ROW = 1024  # elements per row; padding is at most ROW - 1 per parameter


def fits(values: list[torch.Tensor], threshold: int) -> bool:
    """Can these parameters go into flat buffers (one dtype and device, none sampled)?"""
    if not values:
        return False
    first = values[0]
    return (first.dtype.is_floating_point and first.dtype not in LOW_PRECISION
            and all(p.dtype == first.dtype and p.device == first.device
                    and p.layout == torch.strided and p.numel() <= threshold for p in values))


class FlatStats:
    """W0, the weights before an update and a scratch buffer, each one flat buffer.

    Args:
        values: the parameters (plain tensors, one dtype and device; see `fits`).
    """

    def __init__(self, values: list[torch.Tensor]) -> None:
        first = values[0]
        self.device = first.device
        self.count = len(values)
        self._shapes = [tuple(p.shape) for p in values]
        starts, rows, owner = [], 0, []
        for k, p in enumerate(values):
            n = -(-p.numel() // ROW)  # whole rows; an empty parameter has none
            starts.append(rows * ROW)
            owner += [k] * n
            rows += n
        self._rows = rows
        self._owner = torch.tensor(owner, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self._w0 = self._buffer(first)
            self._before = self._buffer(first)
            self._scratch = self._buffer(first)
        self._views = {
            id(buf): [buf[s : s + p.numel()].view(p.shape) for s, p in zip(starts, values)]
            for buf in (self._w0, self._before, self._scratch)
        }
        self._copy(self._w0, values)
        self.w0_sq = self._sum_rows(self._w0, square=True)  # ||W0||^2 per parameter
        self._has_before = False

    def _buffer(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self._rows * ROW, dtype=like.dtype, device=like.device)

    def _copy(self, buf: torch.Tensor, values: list[torch.Tensor]) -> None:
        views = self._views[id(buf)]
        with torch.no_grad():
            torch._foreach_copy_(views, values)

    def _sum_rows(self, buf: torch.Tensor, square: bool) -> torch.Tensor:
        """Per parameter, the sum of squares (or of values) of `buf`, in float64."""
        grid = buf.view(self._rows, ROW)
        # float32 within a row (a sum with dtype=float64 would convert the whole buffer)
        per_row = (torch.linalg.vector_norm(grid, dim=1) if square else grid.sum(dim=1)).double()
        if square:
            per_row = per_row.square()
        out = torch.zeros(self.count, dtype=torch.float64, device=self.device)
        return out.index_add_(0, self._owner, per_row)

    def extra_bytes(self) -> int:
        return 3 * self._w0.numel() * self._w0.element_size()

    # ----- a sampled step -----------------------------------------------------------
    def grad_sums(self, present: list[int], grads: list[torch.Tensor]) -> torch.Tensor | None:
        """(sum g^2, sum |g|) per parameter, float64 (2, count); None if a gradient does
        not fit the buffers (sparse, another dtype or shape): then take the per-tensor path.
        """
        for k, g in zip(present, grads):
            if g.dtype != self._w0.dtype or tuple(g.shape) != self._shapes[k] or (
                    g.layout != torch.strided or g.device != self.device):
                return None
        views = self._views[id(self._scratch)]
        missing = set(range(self.count)) - set(present)
        with torch.no_grad():
            if missing:  # a parameter without a gradient adds zeros
                torch._foreach_zero_([views[k] for k in missing])
            if present:
                torch._foreach_copy_([views[k] for k in present], grads)
            sq = self._sum_rows(self._scratch, square=True)
            l1 = self._sum_rows(self._scratch.abs_(), square=False)
        return torch.stack([sq, l1])

    def keep_before(self, values: list[torch.Tensor]) -> None:
        self._copy(self._before, values)
        self._has_before = True

    def drop_before(self) -> None:
        self._has_before = False

    def weight_sums(self, values: list[torch.Tensor], with_update: bool) -> torch.Tensor:
        """(||W||^2, ||W - W0||^2, ||dW||^2) per parameter, float64 (3, count); the last
        row is NaN without a copy from before the update."""
        with torch.no_grad():
            self._copy(self._scratch, values)
            w_sq = self._sum_rows(self._scratch, square=True)
            if with_update and self._has_before:
                update = self._sum_rows(self._before.sub_(self._scratch), square=True)
            else:
                update = torch.full_like(w_sq, float("nan"))
            self._has_before = False
            change = self._sum_rows(self._scratch.sub_(self._w0), square=True)
        return torch.stack([w_sq, change, update])


def unpack(chunks: dict[str, np.ndarray], present: list[int], count: int) -> None:
    """Turn the host copies of `grad_sums` / `weight_sums` into the probe's per-parameter
    norms, in place: l2 and l1 of the parameters with a gradient, wn, ch, up of all."""
    if "flat_grads" in chunks:
        g = chunks.pop("flat_grads").reshape(2, count)
        chunks["l2"] = np.sqrt(g[0, present])
        chunks["l1"] = g[1, present]
    w = np.sqrt(chunks.pop("flat_weights").reshape(3, count))
    chunks["wn"], chunks["ch"] = w[0], w[1]
    chunks["up"] = w[2] if not np.isnan(w[2]).all() else w[2][:0]
