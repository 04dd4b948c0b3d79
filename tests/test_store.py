"""The run folder survives interruption, truncation and foreign input."""

from __future__ import annotations

import json
import math
import threading

import pytest

from vgdiag.engine.events import EpochEnded
from vgdiag.engine.trainer import run_training
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.reader import read_run
from vgdiag.runs.store import RunStore


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


def test_summary_json_says_nothing_healthy_before_the_first_diagnosis(tmp_path):
    # A CI job reading `jq .verdict` while the run trains, or after a kill -9 there.
    opts = RunOptions(epochs=1, depth=3, width=16, every=5)
    data = load_data(opts)
    exp = build_experiment(opts, data)
    verdicts = []
    with RunStore(tmp_path / "r", exp.name, data.num_classes) as store:
        for event in run_training(exp, data, threading.Event()):
            store.handle(event)
            verdicts.append(json.loads((tmp_path / "r" / "summary.json").read_text())["verdict"])
    assert verdicts[0] == "running: not diagnosed yet"
    assert verdicts[-1].startswith(("healthy", "unhealthy"))  # the final diagnosis
    # A healthy diagnosis has no findings, and is still one: once an epoch was
    # diagnosed, a run in progress reads healthy.
    from vgdiag.engine.summary import run_verdict

    assert run_verdict("running", None, [], diagnosed=True) == "healthy"


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


def test_a_compare_folder_points_at_its_table_and_variants(tmp_path):
    (tmp_path / "compare.json").write_text("{}")
    for name in ("relu", "baseline"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text("{}")
    with pytest.raises(UserError) as excinfo:
        read_run(tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path} is a compare folder, not a run: its table is "
                              f"{tmp_path / 'compare.md'}")
    assert "(baseline, relu)" in message
    assert message.endswith(f"e.g. vgdiag report {tmp_path / 'baseline'}")


def test_foreign_and_newer_folders_are_refused(tmp_path):
    with pytest.raises(UserError, match="not a vgdiag run folder"):
        read_run(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(UserError, match="newer vgdiag"):
        read_run(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        read_run(tmp_path)


def test_reading_a_folder_replays_the_same_fold(tmp_path):
    from vgdiag.engine.summary import RunSummary
    from vgdiag.runs.reader import replay_folder

    opts = RunOptions(epochs=2, depth=3, width=16, every=5)
    data = load_data(opts)
    exp = build_experiment(opts, data)
    live = RunSummary(exp.name, data.num_classes)
    with RunStore(tmp_path / "r", exp.name, data.num_classes) as store:
        for event in run_training(exp, data):
            store.handle(event)
            live.apply(event)
    saved = replay_folder(tmp_path / "r")
    assert saved.status == live.status == "completed"
    assert saved.verdict == live.verdict == store.run.verdict
    assert [e.epoch for e in saved.epochs] == [e.epoch for e in live.epochs] == [1, 2]
    assert saved.first is not None and live.first is not None and live.last is not None
    assert (saved.first.step, saved.last.step) == (live.first.step, live.last.step)
    assert [f.id for f in saved.findings] == [f.id for f in live.findings]
    assert saved.test == live.test and saved.test is not None
    assert not (tmp_path / "r" / ".reserve").exists()


def test_a_truncated_metrics_line_does_not_hide_an_epoch(tmp_path):
    small_run(tmp_path / "r", epochs=2)
    metrics = tmp_path / "r" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    last_epoch = max(i for i, x in enumerate(lines) if '"type":"epoch"' in x)
    metrics.write_text("\n".join(lines[:last_epoch]) + "\n" + lines[last_epoch][:30])
    run = read_run(tmp_path / "r")
    assert [e.epoch for e in run.epochs] == [1, 2]
    assert any("taken from summary.json" in n for n in run.notes)


def test_a_running_folder_with_a_live_writer_is_not_cut_off(tmp_path):
    import socket
    import subprocess
    import sys

    small_run(tmp_path / "r", epochs=1)
    path = tmp_path / "r" / "summary.json"
    summary = json.loads(path.read_text())
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        summary.update(status="running", writer={"pid": writer.pid, "host": socket.gethostname()})
        path.write_text(json.dumps(summary))
        assert read_run(tmp_path / "r").status == "running"
    finally:
        writer.kill()
        writer.wait()
    assert read_run(tmp_path / "r").status == "cut off"


@pytest.mark.parametrize(("field", "value"), [
    ("layers", 5), ("findings", [{"id": "x", "message": "m"}]), ("seconds", "fast"),
    ("epochs", [{"epoch": "one"}]), ("status", "exploded"), ("test", [1]),
])
def test_summaries_of_the_wrong_shape_are_refused_by_field(tmp_path, field, value):
    small_run(tmp_path / "r", epochs=1)
    path = tmp_path / "r" / "summary.json"
    summary = json.loads(path.read_text())
    summary[field] = value
    path.write_text(json.dumps(summary))
    with pytest.raises(UserError, match=f"field '{field}'"):
        read_run(tmp_path / "r")


def test_a_failed_write_marks_the_folder_failed(tmp_path, monkeypatch):
    import errno

    from vgdiag.errors import RunFolderError
    from vgdiag.runs import store as store_module

    opts = RunOptions(epochs=1, depth=2, width=8, every=1)
    data = load_data(opts)
    exp = build_experiment(opts, data)
    real = store_module.RunStore._append
    calls = {"n": 0}

    def full(self, obj):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device",
                          str(self.path / "metrics.jsonl"))
        real(self, obj)

    monkeypatch.setattr(store_module.RunStore, "_append", full)
    with pytest.raises(RunFolderError, match="no space left on device: .*metrics.jsonl"), \
            RunStore(tmp_path / "r", exp.name, data.num_classes) as store:
        for event in run_training(exp, data):
            store.handle(event)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["verdict"] == "failed: " + summary["error"]
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "config.json", "metrics.jsonl", "summary.json"]


def test_dumps_writes_strict_json_that_reads_back_inf_and_keeps_strings():
    from vgdiag.runs.folder import dumps

    obj = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "text": 'Infinity "NaN" -Infinity'}
    text = dumps(obj)

    def refuse(token: str):
        raise ValueError(token)

    back = json.loads(text, parse_constant=refuse)  # no Infinity/NaN tokens left
    assert back == {"a": math.inf, "b": [-math.inf, None, 1.5], "text": obj["text"]}
    assert dumps({"x": 1.0}) == json.dumps({"x": 1.0})


def test_a_ctrl_c_while_the_folder_is_made_leaves_it_interrupted(tmp_path, monkeypatch):
    # The first summary is on disk when the Ctrl-C lands: the folder must not read as a
    # run still being written, then cut off.
    write = RunStore._write_summary

    def write_then_interrupt(self, durable=True):
        write(self, durable)
        if self.run.status.value == "running":
            raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "_write_summary", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        RunStore(tmp_path / "r", "r", 10)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "interrupted"
