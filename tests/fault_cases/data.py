"""Data factories that misbehave on purpose, for the fault suite."""

from __future__ import annotations

import sys

import torch
from torch.utils.data import Dataset, IterableDataset


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


class GetitemRaises(Dataset):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        if i == 5:
            raise IndexError("item 5 is missing")
        x, y = _pairs(1)
        return x[0], y[0]


class NegativeLen(Dataset):
    def __len__(self) -> int:
        return -1

    def __getitem__(self, i: int):
        raise IndexError(i)


class IterRaises(IterableDataset):
    def __iter__(self):
        x, y = _pairs(8)
        for i in range(3):
            yield x[i], y[i]
        raise OSError("the stream broke after 3 items")


class Endless(IterableDataset):
    def __iter__(self):
        x, y = _pairs(1)
        while True:
            yield x[0], y[0]


def exits():
    sys.exit(0)


def getitem_raises():
    return GetitemRaises(), GetitemRaises()


def negative_len():
    return NegativeLen(), NegativeLen()


def iter_raises():
    return IterRaises(), IterRaises()


def endless():
    return Endless(), Endless()
