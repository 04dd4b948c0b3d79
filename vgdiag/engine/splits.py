"""What the trainer consumes: train/validation/test splits and the bundle of them.

Everything small enough to fit stays on the device as one tensor per split, so a
batch is one index_select, not a DataLoader round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch


class Split(Protocol):
    """What the trainer needs of a train, validation or test split."""

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> Split: ...

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...

    def num_batches(self, batch_size: int) -> int: ...


@dataclass
class TensorSplit:
    x: torch.Tensor  # (N, ...) float
    y: torch.Tensor  # (N,) int64 class index (or float targets for regression)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.x.to(device), self.y.to(device))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield batches; shuffled with `generator` when given, in order otherwise.

        The permutation is drawn on the CPU from a CPU generator so the data order is the
        same for a seed whatever the device.
        """
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            return
        order = torch.randperm(n, generator=generator).to(self.x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


@dataclass
class DataBundle:
    name: str
    train: Split
    val: Split
    test: Split | None
    num_classes: int  # 0 for regression targets
    input_shape: tuple[int, ...]  # one sample's shape, e.g. (1, 28, 28)

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(
            self.name,
            self.train.to(device),
            self.val.to(device),
            None if self.test is None else self.test.to(device),
            self.num_classes,
            self.input_shape,
        )

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": 0 if self.test is None else len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
        }
