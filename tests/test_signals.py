"""A real `vgdiag run` process interrupted by SIGINT, SIGTERM and SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vgdiag.runs.reader import read_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def start_run(out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--epochs", "500",
         "--depth", "3", "--width", "32", "--every", "1", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_epochs(out: Path, proc: subprocess.Popen[str], epochs: int = 2) -> None:
    deadline = time.monotonic() + 60
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vgdiag run ended early: {proc.communicate()}")
        if metrics.exists() and metrics.read_text().count('"type":"epoch"') >= epochs:
            return
        time.sleep(0.1)
    proc.kill()
    pytest.fail("no epoch was recorded within 60 s")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_leaves_an_interrupted_readable_folder(tmp_path, sig):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_epochs(out, proc)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # every line complete
    run = read_run(out)
    assert run.status == "interrupted" and len(run.epochs) >= 2
    report = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(out), "--format",
                             "md"], capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert "interrupted" in report.stdout


def test_kill_9_leaves_a_folder_that_reads_as_cut_off(tmp_path):
    out = tmp_path / "run"
    proc = start_run(out)
    wait_for_epochs(out, proc)
    proc.kill()
    proc.communicate(timeout=30)
    run = read_run(out)
    assert run.status == "cut off"
    assert len(run.epochs) >= 2 and run.records
    report = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(out), "--format",
                             "md"], capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    assert "cut off" in report.stdout


def test_sigint_stops_compare_and_keeps_what_ran(tmp_path):
    out = tmp_path / "cmp"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vgdiag", "compare", "--epochs", "300", "--depth", "3",
         "--width", "32", "--plugins", "adam,relu", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_epochs(out / "baseline", proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert json.loads((out / "baseline" / "summary.json").read_text())["status"] == "interrupted"
    assert not (out / "adam").exists()  # no variant starts after the stop
    doc = json.loads((out / "compare.json").read_text())
    assert doc["baseline"]["status"] == "interrupted" and doc["variants"] == []


def test_an_error_that_follows_a_ctrl_c_inside_an_import_is_the_interruption(tmp_path):
    # A Ctrl-C inside an import leaves that module half made, and what imports it next
    # fails (numpy's half import ends in RecursionError): that is an interruption, 130.
    model = tmp_path / "net.py"
    model.write_text(
        "import os, signal, time\n"
        "try:\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    raise ImportError('a module left half imported')\n"
        "import torch\n"
        "Net = lambda: torch.nn.Linear(64, 10)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--model", f"{model}:Net",
         "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().startswith("vgdiag: interrupted (then: ")
    assert "a module left half imported" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_program_takes_the_signals_before_its_heavy_imports():
    # The console script's module: a Ctrl-C while torch or Typer load must find
    # vgdiag's handler already there (one line, 130), not Python's traceback.
    code = ("import sys, signal; import vgdiag.cli.launch as l; "
            "print(sorted(m for m in ('torch', 'typer', 'numpy', 'rich') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"
