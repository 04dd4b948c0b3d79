"""Every parameter statistic of a sampled step in a handful of kernels.

On a CPU a small model's sampled step is dominated by the fixed cost of each tensor
operation, not by its arithmetic: five statistics (gradient L2 and L1, ||W||,
||W - W0||, ||dW||) for each of a few dozen parameters are a few hundred operations.
Here the parameters' W0, the weights before an update and a scratch buffer are each
one flat buffer, in which every parameter starts on a row of ROW elements and its
last row is padded with zeros. One row-wise reduction over a buffer then serves
every parameter at once, and the rows are added per parameter in float64 on the host
(one `np.add.reduceat`): for each statistic a few kernels whatever the number of
parameters.

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


# The rows of FlatStats.rows, one per statistic of a sampled step.
G_L2, G_L1, W_L2, CHANGE_L2, UPDATE_L2 = range(5)


class FlatStats:
    """W0, the weights before an update and a scratch buffer, each one flat buffer.

    A sampled step writes its per-row norms and sums into `rows` (5 x rows), which the
    probe copies to the host with everything else; the rows are added per parameter
    there, in float64 (`per_parameter`). Adding them on the device cost more than the
    reductions themselves: four small kernels per statistic.

    Args:
        values: the parameters (plain tensors, one dtype and device; see `fits`).
    """

    def __init__(self, values: list[torch.Tensor]) -> None:
        first = values[0]
        self.device = first.device
        self.count = len(values)
        self._shapes = [tuple(p.shape) for p in values]
        starts, rows, nonempty, first_row = [], 0, [], []
        for k, p in enumerate(values):
            n = -(-p.numel() // ROW)  # whole rows; an empty parameter has none
            starts.append(rows * ROW)
            if n:
                nonempty.append(k)
                first_row.append(rows)
            rows += n
        self._rows = rows
        # Each parameter's rows are contiguous: one np.add.reduceat adds them all.
        self._nonempty = np.asarray(nonempty, np.intp)
        self._first_row = np.asarray(first_row, np.intp)
        with torch.no_grad():
            self._w0 = self._buffer(first)
            self._before = self._buffer(first)
            self._scratch = self._buffer(first)
            self.rows = torch.zeros(5, rows, dtype=first.dtype, device=first.device)
        self._views = {
            id(buf): [buf[s : s + p.numel()].view(p.shape) for s, p in zip(starts, values)]
            for buf in (self._w0, self._before, self._scratch)
        }
        self._copy(self._w0, values)
        with torch.no_grad():  # ||W0|| per row: constant, read with the first sample
            self.w0_rows = torch.linalg.vector_norm(self._grid(self._w0), dim=1)
        self._has_before = False

    def _buffer(self, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self._rows * ROW, dtype=like.dtype, device=like.device)

    def _grid(self, buf: torch.Tensor) -> torch.Tensor:
        return buf.view(self._rows, ROW)

    def _copy(self, buf: torch.Tensor, values: list[torch.Tensor]) -> None:
        views = self._views[id(buf)]
        with torch.no_grad():
            torch._foreach_copy_(views, values)

    def _norms(self, buf: torch.Tensor, row: int) -> None:
        # float32 within a row of ROW elements: accurate to ~1e-7 (see the module doc)
        torch.linalg.vector_norm(self._grid(buf), dim=1, out=self.rows[row])

    def per_parameter(self, rows: np.ndarray, squared: bool) -> np.ndarray:
        """Host side: per-row values (k x rows) -> per-parameter sums (k x count), float64;
        `squared` for rows of norms (their squares add up)."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self._rows)
        if squared:
            rows = rows * rows
        out = np.zeros((rows.shape[0], self.count))
        if self._rows:
            out[:, self._nonempty] = np.add.reduceat(rows, self._first_row, axis=1)
        return out

    def extra_bytes(self) -> int:
        return 3 * self._w0.numel() * self._w0.element_size() + (
            self.rows.numel() + self.w0_rows.numel()) * self.rows.element_size()

    # ----- a sampled step -----------------------------------------------------------
    def grad_rows(self, present: list[int], grads: list[torch.Tensor]) -> bool:
        """Write the gradients' row norms and row |g| sums into `rows`; False if a
        gradient does not fit the buffers (sparse, another dtype or shape): then take
        the per-tensor path."""
        for k, g in zip(present, grads):
            if g.dtype != self._w0.dtype or tuple(g.shape) != self._shapes[k] or (
                    g.layout != torch.strided or g.device != self.device):
                return False
        views = self._views[id(self._scratch)]
        missing = set(range(self.count)) - set(present)
        with torch.no_grad():
            if missing:  # a parameter without a gradient adds zeros
                torch._foreach_zero_([views[k] for k in missing])
            if present:
                torch._foreach_copy_([views[k] for k in present], grads)
            self._norms(self._scratch, G_L2)
            # abs_ then sum: torch's ord=1 norm along a dim is a scalar loop, 6x slower
            torch.sum(self._grid(self._scratch.abs_()), dim=1, out=self.rows[G_L1])
        return True

    def keep_before(self, values: list[torch.Tensor]) -> None:
        self._copy(self._before, values)
        self._has_before = True

    def drop_before(self) -> None:
        self._has_before = False

    def weight_rows(self, values: list[torch.Tensor], with_update: bool) -> bool:
        """Write the row norms of W, W - W0 and (with an update) W - W_before into
        `rows`; True if the update's row was written."""
        update = with_update and self._has_before
        with torch.no_grad():
            self._copy(self._scratch, values)
            self._norms(self._scratch, W_L2)
            if update:
                self._norms(self._before.sub_(self._scratch), UPDATE_L2)
            self._has_before = False
            self._norms(self._scratch.sub_(self._w0), CHANGE_L2)
        return update


def unpack(chunks: dict[str, np.ndarray], present: list[int], flat: FlatStats,
           grads_fit: bool, with_update: bool) -> None:
    """Turn the host copy of `FlatStats.rows` (and, once, of `w0_rows`) into the probe's
    per-parameter norms, in place: l2 and l1 of the parameters with a gradient, wn, ch,
    up of all (up empty without an update), w0n on the first sample."""
    rows = chunks.pop("flat").astype(np.float64).reshape(5, -1)
    l2_rows = [G_L2, W_L2, CHANGE_L2, UPDATE_L2]
    rows[l2_rows] **= 2  # squares of row norms add up; the L1 row's sums add as they are
    sums = flat.per_parameter(rows, squared=False)  # every row in one reduceat
    norms = np.sqrt(sums[l2_rows])
    if grads_fit:
        chunks["l2"] = norms[0, present]
        chunks["l1"] = sums[G_L1, present]
    chunks["wn"], chunks["ch"] = norms[1], norms[2]
    chunks["up"] = norms[3] if with_update else norms[3][:0]
    if "w0_rows" in chunks:
        chunks["w0n"] = np.sqrt(flat.per_parameter(chunks.pop("w0_rows"), squared=True)[0])
