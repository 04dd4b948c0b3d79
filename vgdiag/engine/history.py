"""Bounded in-memory history of sampled steps.

A million-step run must not grow without bound: when the history is full, every
other record is dropped (the first one, at initialisation, is always kept) and from
then on only every `stride`-th new record is kept. The full-resolution record
stream lives in metrics.jsonl; this is what diagnosis and the dashboard look at.
"""

from __future__ import annotations

from collections.abc import Iterator

from vgdiag.engine.records import StepRecord


class History:
    """A list-like, bounded, decimating store of StepRecords in step order."""

    def __init__(self, max_records: int = 4096) -> None:
        if max_records < 4:
            raise ValueError("max_records must be at least 4")
        self.max_records = max_records
        self.stride = 1  # keep one offered record in `stride`
        self._offered = 0
        self._records: list[StepRecord] = []

    def append(self, record: StepRecord) -> None:
        keep = self._offered % self.stride == 0
        self._offered += 1
        if not keep:
            return
        self._records.append(record)
        if len(self._records) > self.max_records:
            first, rest = self._records[0], self._records[1:]
            self._records = [first, *rest[1::2]]
            self.stride *= 2

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[StepRecord]:
        return iter(self._records)

    def __getitem__(self, index: int) -> StepRecord:
        return self._records[index]

    @property
    def first(self) -> StepRecord | None:
        return self._records[0] if self._records else None

    @property
    def last(self) -> StepRecord | None:
        return self._records[-1] if self._records else None

    def records(self) -> list[StepRecord]:
        return list(self._records)
