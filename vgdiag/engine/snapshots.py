"""Weight snapshots with bounded memory: W0 and the weights before an update.

`weight_change` (||W - W0|| / ||W0||) needs the weights at attach time and
`update_ratio` (||dW|| / ||W||) the weights before the optimizer step. Copying every
parameter twice costs twice the model's memory, more than a GPU has on a model of
billions of parameters. So a parameter above `SAMPLE_THRESHOLD` elements keeps only a
fixed random sample of its coordinates (seeded, the same on every rank), and the
distances are estimated from it:

    ||W - W0||^2  ~  (n / k) * sum over the k sampled coordinates of (w_i - w0_i)^2

an unbiased estimate. The sample is stratified by rows (each output unit, channel or
embedding row gives the same number of coordinates), so rows that move at different
rates do not add to the error. Its relative standard error, for the norm, is about
sqrt((kappa - 1) / (4 k)), where kappa = mean(d^4) / mean(d^2)^2 of the difference d
within a row (3 when d looks Gaussian): 0.2% for kappa = 3 and the k = 2^17 of a
layer of 10^7 elements (tests/test_snapshots.py measures it). A change concentrated
in a few coordinates of each row has a large kappa and a poorer estimate: raise the
threshold for such a model. Parameters
at or below the threshold are copied whole and their numbers are exact. ||W0|| and
||W|| are always exact (a norm needs no copy).

Under FSDP each rank samples its own shard the same way; the probe adds the ranks'
squared estimates, which is again an unbiased estimate for the whole parameter.
"""

from __future__ import annotations

import math

import torch

from vgdiag.engine.probe_kernels import foreach_norm

# Above this many elements a parameter is sampled: a whole copy of a smaller one is
# cheap next to the activations and optimizer state that come with it.
SAMPLE_THRESHOLD = 1 << 20
# A sampled snapshot (the W0 sample, the pre-update sample and their indices) may use
# this fraction of its parameter's bytes (a 2^20 float32 weight: 14k coordinates)...
SAMPLE_BUDGET = 0.04
# ...up to this many coordinates: enough for a 0.2% standard error on Gaussian-like
# changes, 1.5 MB per float32 parameter however large.
MAX_SAMPLE = 1 << 17
SAMPLE_SEED = 0x5EED  # the same on every rank and every run: numbers are reproducible


def sample_size(numel: int, element_size: int, threshold: int = SAMPLE_THRESHOLD) -> int:
    """Coordinates kept for a parameter of `numel` elements (0: kept whole)."""
    if numel <= threshold:
        return 0
    index_bytes = 4 if numel < 2**31 else 8
    per_coordinate = index_bytes + 2 * element_size  # index, W0 value, pre-update value
    return max(1, min(MAX_SAMPLE, int(SAMPLE_BUDGET * numel * element_size / per_coordinate)))


class Snapshots:
    """W0 at attach time and, around a step, the weights before it; exact or sampled.

    The probe's interface: `w0_norms()`, `keep_before(values)` (in the optimizer's
    pre-step hook), `change_norms(values)`, `update_norms(values)`, `drop_before()`.
    Every result is a list of 0-d device tensors, one per parameter, nothing is read
    back to the host. The pre-update buffers are allocated once and reused.

    Args:
        values: the parameters as plain tensors (a rank's local shard under FSDP).
        threshold: parameters with more elements than this are sampled.
        seed: seeds the sampled coordinates (parameter k uses seed + k).
    """

    def __init__(self, values: list[torch.Tensor], threshold: int = SAMPLE_THRESHOLD,
                 seed: int = SAMPLE_SEED) -> None:
        self.threshold = threshold
        self._index: list[torch.Tensor | None] = []
        self._scale: list[float] = []  # sqrt(n / k) per sampled parameter, 1.0 exact
        self._w0: list[torch.Tensor] = []
        with torch.no_grad():
            for k, p in enumerate(values):
                flat = p.detach().reshape(-1)
                size = sample_size(flat.numel(), flat.element_size(), threshold)
                if size == 0:
                    self._index.append(None)
                    self._scale.append(1.0)
                    self._w0.append(p.detach().clone())
                    continue
                index = _sample(tuple(p.shape), size, seed + k).to(flat.device)
                self._index.append(index)
                self._scale.append(math.sqrt(flat.numel() / index.numel()))
                # 16-bit weights are sampled into float32: their differences are tiny.
                self._w0.append(flat.index_select(0, index).to(_sample_dtype(flat)))
            self._w0_norms = foreach_norm([p.detach() for p in values]) if values else []
        self._before: list[torch.Tensor] = [torch.empty_like(w) for w in self._w0]
        self._has_before = False
        self._exact = [k for k, i in enumerate(self._index) if i is None]
        self._sampled = [k for k, i in enumerate(self._index) if i is not None]

    # ----- what the probe reads -------------------------------------------------
    @property
    def sampled(self) -> list[bool]:
        """Per parameter: is it estimated from a sample?"""
        return [i is not None for i in self._index]

    def w0_norms(self) -> list[torch.Tensor]:
        """||W0|| per parameter, exact (taken from the whole tensors at attach time)."""
        return list(self._w0_norms)

    def keep_before(self, values: list[torch.Tensor]) -> None:
        """Copy (or sample) the weights about to be updated into the reused buffers."""
        with torch.no_grad():
            exact = self._exact
            if exact:
                torch._foreach_copy_([self._before[k] for k in exact],
                                     [values[k].detach() for k in exact])
            for k in self._sampled:
                index = self._index[k]
                assert index is not None
                self._before[k].copy_(values[k].detach().reshape(-1).index_select(0, index))
        self._has_before = True

    def change_norms(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """||W - W0|| per parameter (estimated for the sampled ones)."""
        return self._distances(values, self._w0, in_place=False)

    def update_norms(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """||W_before - W|| of the step just taken; [] when no copy was kept."""
        if not self._has_before:
            return []
        self._has_before = False
        # The pre-update buffers are read once more: the difference goes into them.
        return self._distances(values, self._before, in_place=True)

    def drop_before(self) -> None:
        self._has_before = False

    def extra_bytes(self) -> int:
        """Bytes held: W0 copies or samples, the pre-update buffers, the indices."""
        tensors = [*self._w0, *self._before, *(i for i in self._index if i is not None)]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ----- kernels --------------------------------------------------------------------
    def _distances(self, values: list[torch.Tensor], ref: list[torch.Tensor],
                   in_place: bool) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(values)
        with torch.no_grad():
            exact = self._exact
            if exact:
                current = [values[k].detach() for k in exact]
                if in_place:  # ref is scratch: no fresh tensors
                    diffs = [ref[k] for k in exact]
                    torch._foreach_sub_(diffs, current)
                else:
                    diffs = list(torch._foreach_sub(current, [ref[k] for k in exact]))
                for k, norm in zip(exact, foreach_norm(diffs)):
                    out[k] = norm
            for k in self._sampled:
                index = self._index[k]
                assert index is not None
                picked = values[k].detach().reshape(-1).index_select(0, index)
                picked = picked.to(ref[k].dtype).sub_(ref[k])
                out[k] = torch.linalg.vector_norm(picked) * self._scale[k]
        return [t for t in out if t is not None]


def _sample_dtype(flat: torch.Tensor) -> torch.dtype:
    return torch.float32 if flat.dtype in (torch.float16, torch.bfloat16) else flat.dtype


def _sample(shape: tuple[int, ...], size: int, seed: int) -> torch.Tensor:
    """About `size` flat coordinates of a tensor of `shape`, sorted for locality.

    Stratified by rows (output units, channels, embedding rows: what moves at its own
    rate): every row gives the same number of coordinates, drawn at random within it,
    so a few fast rows cannot dominate the error; a tensor with more rows than `size`
    gives `size` coordinates drawn anywhere. Drawn on the CPU from a seeded generator
    (the same on every rank and device), with replacement (no buffer of the size of
    the tensor).
    """
    numel = math.prod(shape)
    generator = torch.Generator().manual_seed(seed)
    rows = shape[0] if len(shape) >= 2 else 1
    if 1 < rows <= size:
        cols = numel // rows
        within = torch.randint(cols, (rows, size // rows), generator=generator,
                               dtype=torch.int64).sort(dim=1).values
        index = (within + torch.arange(rows, dtype=torch.int64).unsqueeze(1) * cols).reshape(-1)
    else:
        index = torch.randint(numel, (size,), generator=generator,
                              dtype=torch.int64).sort().values
    return index.to(torch.int32) if numel < 2**31 else index
