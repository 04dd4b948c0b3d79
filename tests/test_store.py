"""The run folder survives interruption, truncation and foreign input."""

from __future__ import annotations

import json
import threading

import pytest

from vgdiag.engine.events import EpochEnded
from vgdiag.engine.trainer import run_training
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.store import RunStore, read_run


def small_run(path, stop_after_epochs: int | None = None, epochs: int = 3):
    opts = RunOptions(epochs=epochs, depth=3, width=16, every=5)
    data = load_data(opts)
    exp = build_experiment(opts, data)
    stop = threading.Event()
    with RunStore(path, exp.name, data.num_classes) as store:
        for event in run_training(exp, data, stop):
            store.handle(event)
            if isinstance(event, EpochEnded) and event.record.epoch == stop_after_epochs:
                stop.set()
    return store


def test_interrupted_run_is_marked_and_readable(tmp_path):
    small_run(tmp_path / "r", stop_after_epochs=1)
    run = read_run(tmp_path / "r")
    assert run.status == "interrupted"
    assert [e.epoch for e in run.epochs] == [1]
    assert run.summary["test"] is None
    assert run.records and run.records[0].step == 0


def test_records_read_back_equal_what_was_written(tmp_path):
    small_run(tmp_path / "r", epochs=1)
    run = read_run(tmp_path / "r")
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["type"] == "step"]
    assert [r.step for r in run.records] == [x["step"] for x in steps]
    first = steps[0]["layers"]["1"]["grad_norm"]
    assert run.records[0].layers["1"].grad_norm == first
    assert run.records[0].weight_hist  # histograms at initialisation


def test_cut_off_run_reads_every_complete_line(tmp_path):
    small_run(tmp_path / "r")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    summary["status"] = "running"  # as a kill -9 leaves it
    (tmp_path / "r" / "summary.json").write_text(json.dumps(summary))
    metrics = tmp_path / "r" / "metrics.jsonl"
    text = metrics.read_text()
    complete = sum(json.loads(x)["type"] in ("step", "epoch") for x in text.splitlines())
    metrics.write_text(text + text.splitlines()[1][: 40])  # a half-written last line
    run = read_run(tmp_path / "r")
    assert run.status == "cut off"
    assert any("cut off" in n for n in run.notes) and any("skipped 1" in n for n in run.notes)
    assert len(run.records) + len(run.epochs) == complete


def test_foreign_and_newer_folders_are_refused(tmp_path):
    with pytest.raises(UserError, match="not a vgdiag run folder"):
        read_run(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UserError, match="newer vgdiag"):
        read_run(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        read_run(tmp_path)
