"""Before training: what is wrong with the data itself, found in one pass per tensor.

A split held as tensors (a :class:`TensorSplit`: a stacked Dataset or an ``(inputs,
targets)`` pair) is checked whole, one vectorised operation per tensor: NaN or inf
values, and class targets that cross-entropy cannot take. A split read batch by batch
(a DataLoader, or a dataset too big to stack) is not read through here: that would
cost a pass over the data, and a user's iterator may not survive being read twice.
Only its first inputs are looked at, and only where that is cheap (`first_inputs`).

The checks that need the model (is the NaN harmful, do the other shapes fail) are
made by :mod:`vgdiag.inputs.shapecheck`, which calls these.
"""

from __future__ import annotations

import math
from collections.abc import Sized
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from vgdiag.engine.splits import DataBundle, Split, TensorSplit
from vgdiag.inputs.loader_split import (
    LoaderSplit,
    first_batch,
)
from vgdiag.inputs.usercode import preserved_rng

# How the splits are named in messages.
SPLIT_LABELS = {"train": "training", "val": "validation", "test": "test"}
# F.cross_entropy's default ignore_index: a target it skips (padding in token data).
IGNORE_INDEX = -100
# The "split" of the targets in the first batch of a training DataLoader.
FIRST_BATCH = "train-batch"


def named_splits(bundle: DataBundle) -> list[tuple[str, Split]]:
    """("train", split), ("val", split) and ("test", split) where there is one."""
    splits: list[tuple[str, Split]] = [("train", bundle.train), ("val", bundle.val)]
    if bundle.test is not None:
        splits.append(("test", bundle.test))
    return splits


# ------------------------------------------------------------------------ non-finite


@dataclass
class NonFinite:
    """Where a tensor's NaN or inf values are, by sample (the first dimension)."""

    kind: str  # "NaN" or "inf": what the first bad sample holds
    samples: torch.Tensor  # indices of the samples holding a non-finite value

    @property
    def first(self) -> int:
        return int(self.samples[0])

    def message(self, which: str, part: str) -> str:
        count = int(self.samples.numel())
        more = f" (and {count - 1:,} more)" if count > 1 else ""
        return (
            f"the {SPLIT_LABELS.get(which, which)} {part} hold {self.kind} at sample "
            f"{self.first}{more}: clean or drop them"
        )


def value_ends(t: torch.Tensor) -> tuple[float, float] | None:
    """(min, max) of a float tensor in one ``aminmax`` (NaN propagates to both ends, an
    inf is one of them); None for other dtypes or an empty tensor. Read once per split
    for both the NaN check and the input-scale warning."""
    if not t.is_floating_point() or t.numel() == 0 or t.dim() == 0:
        return None
    low, high = torch.aminmax(t)
    return float(low), float(high)


def find_non_finite(t: torch.Tensor, ends: tuple[float, float] | None = None
                    ) -> NonFinite | None:
    """The samples of `t` holding NaN or inf, or None (also for integer tensors);
    `ends` is `value_ends(t)` where the caller has it already.

    One ``aminmax`` when everything is finite (it is several times faster than
    ``isfinite(t).all()``, whose bool tensor costs half a second for 60,000 28x28 images
    on two CPU cores); the samples are found only when something is not finite.
    """
    if not (t.is_floating_point() or t.is_complex()) or t.numel() == 0 or t.dim() == 0:
        return None
    if t.is_floating_point():
        low, high = ends if ends is not None else value_ends(t) or (0.0, 0.0)
        if math.isfinite(low) and math.isfinite(high):
            return None
    elif bool(torch.isfinite(t).all()):
        return None
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(dim=1)
    samples = bad.nonzero().flatten().cpu()
    kind = "NaN" if bool(torch.isnan(t[int(samples[0])]).any()) else "inf"
    return NonFinite(kind, samples)


# A network expects inputs of order 1 (standardised, or pixels in 0..1): inputs past
# this are raw (0..255 pixels, unscaled features). Said, not refused: counts may be meant.
RAW_INPUT_SCALE = 20.0


def raw_scale(ends: tuple[float, float] | None) -> str | None:
    """A warning where the training inputs, spanning `ends` (`value_ends` of the split,
    whole or its first batch), are far from order 1; None where they are not, are not
    float, or are not all finite."""
    if ends is None:
        return None
    low, high = ends
    if not (math.isfinite(low) and math.isfinite(high)):
        return None  # NaN/inf: its own error
    if max(abs(low), abs(high)) <= RAW_INPUT_SCALE:
        return None
    # Pixels of 8 or 16 bits, whatever the batch's own maximum: their full scale.
    scale = next((f for f in (255, 65535) if f / 2 < high <= f), None)
    fix = ("standardise them (x - mean) / std" if low < 0
           else f"divide them by {scale}" if scale is not None
           else f"divide them by {float(f'{high:.3g}'):g}")
    return (f"the training inputs span {low:g} to {high:g}, far from the order-1 range a "
            f"network expects (not normalised?): {fix}; inputs this large saturate "
            f"sigmoid/tanh layers and blow up the first layer's gradient")


# ---------------------------------------------------------------------------- labels


@dataclass
class OutOfRange:
    """Integer targets of one split that the model's classes do not cover."""

    which: str  # "train", "val", "test"
    count: int  # targets out of range
    total: int  # targets in the split
    values: list[int]  # the distinct values out of range, in order
    first: int  # the first sample holding one

    def describe(self) -> str:
        """'1 of 1,437 training targets is 15 (sample 37)'; for the first batch of a
        DataLoader ("train-batch") '1 of the first 64 training targets is 15'."""
        many = self.count > 1
        if len(self.values) <= 3:
            shown = " or ".join(str(v) for v in self.values)
        else:
            shown = f"between {self.values[0]} and {self.values[-1]}"
        if self.which == FIRST_BATCH:  # a loader's order says nothing: no sample number
            return (f"{self.count:,} of the first {self.total:,} training targets "
                    f"{'are' if many else 'is'} {shown}")
        where = f"first at sample {self.first}" if many else f"sample {self.first}"
        return (
            f"{self.count:,} of {self.total:,} {SPLIT_LABELS.get(self.which, self.which)} "
            f"targets {'are' if many else 'is'} {shown} ({where})"
        )


def _out_of_range(which: str, y: torch.Tensor, mask: torch.Tensor) -> OutOfRange | None:
    if not bool(mask.any()):
        return None
    per_sample = mask.reshape(mask.shape[0], -1).any(dim=1) if mask.dim() else mask.reshape(1)
    values = torch.unique(y[mask]).tolist()
    return OutOfRange(which, int(mask.sum()), int(y.numel()), [int(v) for v in values],
                      int(per_sample.nonzero()[0]))


def class_targets(bundle: DataBundle) -> list[tuple[str, torch.Tensor]]:
    """The integer targets of every split held as tensors."""
    return [
        (which, split.y)
        for which, split in named_splits(bundle)
        if isinstance(split, TensorSplit) and not split.y.is_floating_point()
        and not split.y.is_complex() and split.y.dtype != torch.bool
    ]


def negative_targets(targets: list[tuple[str, torch.Tensor]]) -> list[OutOfRange]:
    """Targets below 0 (but for IGNORE_INDEX, which cross-entropy skips)."""
    found = (_out_of_range(which, y, (y < 0) & (y != IGNORE_INDEX)) for which, y in targets)
    return [f for f in found if f is not None]


def targets_beyond(targets: list[tuple[str, torch.Tensor]], classes: int) -> list[OutOfRange]:
    """Targets of `classes` or more."""
    found = (_out_of_range(which, y, y >= classes) for which, y in targets)
    return [f for f in found if f is not None]


def typical_class_size(targets: list[tuple[str, torch.Tensor]], classes: int) -> float:
    """The median number of targets per class 0..classes-1 that occurs, over all splits."""
    counts = torch.zeros(max(classes, 1), dtype=torch.long)
    for _, y in targets:
        inside = y[(y >= 0) & (y < classes)].flatten()
        if inside.numel():
            counts += torch.bincount(inside, minlength=classes).cpu()[: counts.numel()]
    present = counts[counts > 0]
    return float(present.float().median()) if present.numel() else 0.0


def look_like_strays(targets: list[tuple[str, torch.Tensor]], classes: int) -> bool:
    """Targets of `classes` or more so rare beside the real classes that they are wrong
    labels, not classes the model lacks: each value (over all splits) at most a tenth
    as frequent as a typical class."""
    typical = typical_class_size(targets, classes)
    per_value: dict[int, int] = {}
    for _, y in targets:
        beyond = y[y >= classes].flatten()
        if beyond.numel():
            values, counts = torch.unique(beyond, return_counts=True)
            for v, c in zip(values.tolist(), counts.tolist()):
                per_value[v] = per_value.get(v, 0) + c
    return bool(per_value) and max(per_value.values()) * 10 <= typical


# ---------------------------------------------------------------------------- shapes


def first_inputs(split: Split, samples: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Up to `samples` (inputs, targets) from the start of `split`, where that is cheap.

    A TensorSplit gives its first rows; a map-style dataset read batch by batch gives
    its first items; a DataLoader its first batch, only when it loads in this process
    (``num_workers == 0``) from a map-style dataset, so that no worker starts and no
    single-use iterator is spent. Otherwise None: the split is not looked at.
    """
    if isinstance(split, TensorSplit):
        return split.x[:samples], split.y[:samples]
    if not isinstance(split, LoaderSplit):
        return None
    source = split.source
    if isinstance(source, DataLoader):
        if source.num_workers != 0 or isinstance(source.dataset, IterableDataset):
            return None
    elif isinstance(source, IterableDataset) or not isinstance(source, Sized):
        return None
    try:
        with preserved_rng():  # a shuffling DataLoader draws from the global state
            x, y = first_batch(split, "", samples)  # a dataset's: its first `samples`
        return x[:samples], y[:samples]
    except Exception:  # noqa: BLE001 -- the user's code: training will say what it is
        return None


def sample_shape(x: Any) -> tuple[int, ...]:
    return tuple(x.shape[1:])
