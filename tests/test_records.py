"""StepRecord.hists: the one place a histogram kind is turned into a record's field."""

from __future__ import annotations

import numpy as np
import pytest

from vgdiag.engine.records import HIST_KINDS, Histogram, StepRecord


def _record() -> StepRecord:
    weights = {"0": Histogram(-1.0, 1.0, np.array([1, 2, 3], np.int64))}
    grads = {"0": Histogram(-8.0, 0.0, np.array([4, 0], np.int64))}
    return StepRecord(5, 1, 2.3, {}, weight_hist=weights, grad_hist=grads)


def test_hists_picks_the_kind_and_is_the_records_own_dict() -> None:
    record = _record()
    assert record.hists("weight") is record.weight_hist
    assert record.hists("grad") is record.grad_hist
    assert [int(record.hists(k)["0"].counts.sum()) for k in HIST_KINDS] == [6, 4]
    record.hists("grad")["1"] = Histogram(0.0, 1.0, np.array([7], np.int64))
    again = StepRecord.from_json(record.to_json())
    assert sorted(again.grad_hist) == ["0", "1"] and sorted(again.weight_hist) == ["0"]


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown histogram kind 'weights'"):
        _record().hists("weights")
