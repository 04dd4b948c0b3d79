"""Run folders a writer left incomplete: no summary.json, a summary missing fields, and
a killed writer that is a zombie until its parent reaps it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_report import _train

from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs import folder
from vgdiag.runs.folder import pid_alive
from vgdiag.runs.reader import read_run
from vgdiag.runs.report import render_report


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 2 x 40 steps, sampled every step: a real run folder in about a second.
    opts = RunOptions(epochs=2, depth=2, width=8, batch_size=32, lr=0.01, hist_every=0)
    return _train(tmp_path_factory.mktemp("runs") / "done", opts)


def _report(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vgdiag", "report", str(folder), *args],
                          capture_output=True, text=True, timeout=120)


def _metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _without_summary(completed: Path, folder: Path) -> Path:
    shutil.copytree(completed, folder)
    (folder / "summary.json").unlink()
    return folder


def test_report_reads_a_run_without_summary_json_as_cut_off(completed_run: Path,
                                                            tmp_path: Path) -> None:
    folder = _without_summary(completed_run, tmp_path / "b")
    lines = _metrics(folder)
    sampled = [x["step"] for x in lines if x["type"] == "step"]
    epochs = [x for x in lines if x["type"] == "epoch"]
    steps = max(epochs[-1]["steps"], sampled[-1] + 1)
    assert steps == 80 and len(epochs) == 2

    md = _report(folder)
    assert md.returncode == 0, md.stderr
    assert f"**Status: cut off** \u00b7 {steps} steps" in md.stdout
    assert "summary.json is missing" in md.stdout

    # --fail-on follows the findings recomputed from the metrics (README's exit codes).
    js = _report(folder, "--format", "json", "--fail-on", "error")
    doc = json.loads(js.stdout)
    errors = [f["id"] for f in doc["findings"] if f["severity"] == "error"]
    assert js.returncode == (1 if errors else 0), js.stderr
    assert doc["status"] == "cut off" and doc["steps"] == steps
    assert doc["series"]["steps"] == sampled
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2]
    assert doc["seconds"] == pytest.approx(sum(e["seconds"] for e in epochs))
    assert doc["test"] is None
    # What only config.json says when there is no summary: the classes and the name.
    config = json.loads((folder / "config.json").read_text())
    assert doc["num_classes"] == config["data"]["num_classes"] == 10
    assert doc["name"] == config["experiment"]["name"]
    run = read_run(folder)
    assert {f["id"] for f in doc["findings"]} == {f.id for f in run.findings}
    assert "cut off" in render_report(run, "html")


def test_a_run_killed_before_its_first_summary_with_only_a_config(tmp_path: Path,
                                                                  completed_run: Path) -> None:
    folder = tmp_path / "early"
    folder.mkdir()
    shutil.copy(completed_run / "config.json", folder / "config.json")
    (folder / "metrics.jsonl").write_text("")
    md = _report(folder)
    assert md.returncode == 0, md.stderr
    assert "**Status: cut off** \u00b7 0 steps" in md.stdout
    doc = json.loads(_report(folder, "--format", "json").stdout)
    assert doc["status"] == "cut off" and doc["steps"] == 0 and doc["series"]["steps"] == []
    # Nothing was measured: not healthy, and a CI gate at any level fails it.
    assert doc["verdict"] == "not measured"
    assert _report(folder, "--fail-on", "error").returncode == 1


@pytest.mark.parametrize("files", [(), ("metrics.jsonl",), ("metrics.jsonl", ".reserve")])
def test_a_folder_with_too_little_to_read_is_exit_2_in_one_line(tmp_path: Path,
                                                                files: tuple[str, ...]) -> None:
    for name in files:  # a run killed before it wrote anything but an empty metrics.jsonl
        (tmp_path / name).write_text("")
    proc = _report(tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "summary.json" in lines[0] and "config.json" in lines[0]
    assert "metrics.jsonl" in lines[0] and "Error" not in lines[0]


@pytest.mark.parametrize("status", ["completed", "interrupted", "failed", "running"])
def test_a_summary_missing_any_field_is_read_without_a_key_error(completed_run: Path,
                                                                 tmp_path: Path,
                                                                 status: str) -> None:
    folder = tmp_path / "partial"
    shutil.copytree(completed_run, folder)
    full = json.loads((completed_run / "summary.json").read_text())
    full.update(status=status, error="RuntimeError: boom (net.py:3)" if status == "failed"
                else None)
    for key in full:
        partial = {k: v for k, v in full.items() if k != key}
        (folder / "summary.json").write_text(json.dumps(partial))
        run = read_run(folder)
        if key != "status":
            assert run.status == ("cut off" if status == "running" else status), key
        doc = json.loads(render_report(run, "json"))
        assert doc["steps"] == 80, key
        assert "Status:" in render_report(run, "md"), key
    # Only what identifies the folder as vgdiag's: everything else is optional.
    (folder / "summary.json").write_text(json.dumps({"schema_version": 1, "status": status}))
    run = read_run(folder)
    assert run.status == ("cut off" if status == "running" else status)
    assert run.summary["num_classes"] == 10 and run.state.steps == 80
    assert render_report(run, "md") and json.loads(render_report(run, "json"))["steps"] == 80


# ----- a killed writer not yet reaped ------------------------------------------------

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists() or
                                not hasattr(os, "waitid"), reason="Linux /proc only")


def _zombie() -> subprocess.Popen[bytes]:
    """A child killed with SIGKILL and left unreaped: a zombie until .wait()."""
    child = subprocess.Popen(["sleep", "30"])
    assert pid_alive(child.pid)
    os.kill(child.pid, signal.SIGKILL)
    # Wait until it has died, without reaping it (WNOWAIT): it stays a zombie.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    return child


@needs_proc
def test_a_killed_unreaped_process_is_not_alive() -> None:
    child = _zombie()
    try:
        stat = Path(f"/proc/{child.pid}/stat").read_text()
        assert stat.rsplit(")", 1)[1].split()[0] == "Z"  # still there, as a zombie
        assert not pid_alive(child.pid)
        assert pid_alive(os.getpid())
    finally:
        child.wait()
    assert not pid_alive(child.pid)


@needs_proc
def test_a_run_whose_writer_is_a_zombie_reads_as_cut_off(completed_run: Path,
                                                         tmp_path: Path) -> None:
    folder = tmp_path / "killed"
    shutil.copytree(completed_run, folder)
    summary = json.loads((folder / "summary.json").read_text())
    child = _zombie()
    try:
        summary.update(status="running", test=None,
                       writer={"pid": child.pid, "host": socket.gethostname()})
        (folder / "summary.json").write_text(json.dumps(summary))
        run = read_run(folder)
        assert run.status == "cut off"
        assert "**Status: cut off**" in render_report(run, "md")
    finally:
        child.wait()


def test_without_proc_a_live_process_is_still_alive(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setattr(folder, "PROC", tmp_path / "no-proc")
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
