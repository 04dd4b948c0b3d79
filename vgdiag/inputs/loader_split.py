"""Splits read batch by batch (a user's DataLoader, or a dataset too big to stack),
and the conversions every batch of user data goes through.

Inputs in float64 become float32; integer targets become int64 (class indices); float
targets float32. A split that cannot tell its length is counted by one pass over it
(`scan`), which also finds the largest class index; a pass that goes past
`max_stream_samples()` is taken for an endless stream.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vgdiag.engine.splits import Split, TensorSplit
from vgdiag.errors import UserError
from vgdiag.inputs.usercode import preserved_rng

# Batch size of the DataLoader made here for large map-style or iterable datasets
# when only a scan is needed (counting samples, finding the largest class index).
SCAN_BATCH = 256
# A split read once before training (an IterableDataset or a DataLoader without a
# length, to count it) that goes past this many samples is taken for an endless
# stream; VGDIAG_MAX_STREAM_SAMPLES overrides it. Ten million 28x28 images is more
# than any epoch vgdiag's probe is meant for.
MAX_STREAM_SAMPLES = 10_000_000
SCAN_PROGRESS_S = 2.0  # a long count says how far it got this often

SplitSource = DataLoader | Dataset


# ---------------------------------------------------------------------------- tensors


def normalise_input(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype == torch.float64 else x


def normalise_target(y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.bool or y.is_floating_point():
        return y.float() if y.dtype in (torch.float64, torch.bool) else y
    return y.long()


def as_tensor(value: Any, where: str) -> torch.Tensor:
    """`value` as a tensor, or a UserError naming `where` it came from."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value) if not np.isscalar(value) else value)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(
            f"{where} is a {type(value).__name__}, not a tensor, array or number: convert it "
            f"in the dataset (e.g. torchvision's transforms.ToTensor())"
        ) from None


def as_pair(item: Any, where: str) -> tuple[Any, Any]:
    """An (input, target) item, or a UserError naming `where` it came from."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    size = f" of {len(item)} items" if isinstance(item, (tuple, list)) else ""
    raise UserError(
        f"{where} is a {type(item).__name__}{size}: each item must be an (input, target) pair"
    )


# ----------------------------------------------------------------------- LoaderSplit


class LoaderSplit:
    """A split read batch by batch: a user's DataLoader, or a dataset too big to stack.

    Implements :class:`vgdiag.engine.splits.Split`. A DataLoader keeps its own batch
    size, sampler and shuffling; `batches` ignores `batch_size` and `generator` for it.
    A dataset is read through a DataLoader made per epoch with the trainer's batch size,
    shuffled with the trainer's generator when given (map-style datasets only).
    """

    def __init__(
        self,
        source: SplitSource,
        *,
        device: torch.device | str | None = None,
        size: int | None = None,
        loader_batches: int | None = None,
    ) -> None:
        """Wrap `source`.

        Args:
            source: a DataLoader, or a Dataset (map-style or iterable).
            device: where batches are moved (None: left where they are).
            size: number of samples, when the source cannot tell (an iterable dataset).
            loader_batches: batches per epoch of a DataLoader that cannot tell.
        """
        self.source = source
        self.device = None if device is None else torch.device(device)
        self._size = size
        self._loader_batches = loader_batches

    @property
    def dataset(self) -> Any:
        """The underlying dataset (the DataLoader's, or the source itself)."""
        return self.source.dataset if isinstance(self.source, DataLoader) else self.source

    def __len__(self) -> int:
        dataset = self.dataset
        if isinstance(dataset, Sized) and not isinstance(dataset, IterableDataset):
            return len(dataset)
        if self._size is None:
            self._size = scan(self).size
        return self._size

    def to(self, device: torch.device | str) -> LoaderSplit:
        return LoaderSplit(
            self.source, device=device, size=self._size, loader_batches=self._loader_batches
        )

    def _loader(self, batch_size: int, generator: torch.Generator | None) -> DataLoader:
        if isinstance(self.source, DataLoader):
            return self.source
        order: list[int] | None = None
        if generator is not None and not isinstance(self.source, IterableDataset):
            # The same permutation TensorSplit draws, so a dataset gives the same batches
            # whether it was stacked or streamed.
            order = torch.randperm(len(self), generator=generator).tolist()
        # A generator of its own: a DataLoader draws a worker seed per epoch, which must
        # come from neither the trainer's generator nor the global random state.
        return DataLoader(
            self.source, batch_size=batch_size, sampler=order, generator=torch.Generator()
        )

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, targets) batches on this split's device."""
        loader = self._loader(batch_size, generator)
        non_blocking = bool(getattr(loader, "pin_memory", False))
        for index, batch in enumerate(loader):
            x, y = as_pair(batch, f"batch {index} of the data")
            x = normalise_input(as_tensor(x, f"the inputs of batch {index}"))
            y = normalise_target(as_tensor(y, f"the targets of batch {index}"))
            if self.device is not None:
                x = x.to(self.device, non_blocking=non_blocking)
                y = y.to(self.device, non_blocking=non_blocking)
            yield x, y

    def num_batches(self, batch_size: int) -> int:
        if isinstance(self.source, DataLoader):
            try:
                return len(self.source)
            except TypeError:  # an iterable dataset without __len__
                if self._loader_batches is None:
                    self._loader_batches = scan(self).batches
                return self._loader_batches
        return -(-len(self) // batch_size)


# ------------------------------------------------------------------------- scanning


class Scan:
    """What one pass over a LoaderSplit found."""

    def __init__(self) -> None:
        self.size = 0
        self.batches = 0
        self.max_target = -1
        self.integer_targets = True


def max_stream_samples() -> int:
    """How many samples one pass over a split may have before it counts as endless."""
    text = os.environ.get("VGDIAG_MAX_STREAM_SAMPLES", "")
    return int(text) if text.isdigit() and int(text) > 0 else MAX_STREAM_SAMPLES


def scan(split: LoaderSplit) -> Scan:
    """One pass over `split`'s targets; its size and batch count are kept on it."""
    found = Scan()
    limit = max_stream_samples()
    started = shown_at = time.monotonic()
    with preserved_rng():  # a shuffling DataLoader draws from the global random state
        for _, y in split.batches(SCAN_BATCH):
            found.size += int(y.shape[0]) if y.dim() else 1
            found.batches += 1
            if y.is_floating_point():
                found.integer_targets = False
            elif y.numel():
                found.max_target = max(found.max_target, int(y.max()))
            if found.size > limit:
                raise UserError(
                    f"the data yielded more than {limit:,} samples in one pass and looks "
                    "endless: give its __iter__ an end (one epoch), or set "
                    "VGDIAG_MAX_STREAM_SAMPLES for a larger stream"
                )
            now = time.monotonic()
            if now - shown_at >= SCAN_PROGRESS_S:
                shown_at = now
                print(f"vgdiag: reading the data to count it: {found.size:,} samples in "
                      f"{now - started:.0f} s", file=sys.stderr, flush=True)
    split._size = found.size
    if isinstance(split.source, DataLoader):
        split._loader_batches = found.batches
    return found


def declared_classes(dataset: Any) -> int | None:
    """num_classes, len(classes) or max(targets) + 1 of a dataset or what it wraps."""
    for _ in range(4):  # Subset of Subset of ...: follow .dataset a few levels
        if dataset is None:
            return None
        declared = getattr(dataset, "num_classes", None)
        if isinstance(declared, int) and declared > 0:
            return declared
        classes = getattr(dataset, "classes", None)
        if isinstance(classes, Sized) and not isinstance(classes, str) and len(classes) > 0:
            return len(classes)
        targets = getattr(dataset, "targets", None)
        if targets is not None and not isinstance(targets, str):
            with contextlib.suppress(TypeError, ValueError, RuntimeError, UserError):
                t = as_tensor(targets, "targets")
                if t.numel() and not t.is_floating_point():
                    return int(t.max()) + 1
        dataset = getattr(dataset, "dataset", None)
    return None


def first_batch(split: Split, which: str, batch_size: int = SCAN_BATCH
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first (inputs, targets) of `split` (one sample of a TensorSplit; a
    DataLoader's own first batch)."""
    if isinstance(split, TensorSplit):
        return split.x[:1], split.y[:1]
    batches = split.batches(batch_size)
    try:
        for x, y in batches:
            return x, y
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    raise UserError(f"the {which} split yields no batches")
