"""A real `vgdiag compare --jobs 2` process under Ctrl-C, SIGTERM and a killed worker,
and `compare --tui --jobs 2` in a real terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

LONG = ["--epochs", "400", "--depth", "2", "--width", "16", "--every", "50",
        "--plugins", "adam,relu,skip,weight-init", "--jobs", "2"]
# Started costliest first (Plugin.relative_cost): adam (1.1), then the baseline; the
# others, of equal cost, wait in their order.


def start(out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "vgdiag", "compare", *LONG, *extra, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def epochs_in(folder: Path) -> int:
    metrics = folder / "metrics.jsonl"
    return metrics.read_text().count('"type":"epoch"') if metrics.exists() else 0


def wait_until(proc: subprocess.Popen[str], ready, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"compare ended early: {proc.communicate()}")
        if ready():
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the variants did not start training in time")


def two_training(out: Path) -> bool:
    return epochs_in(out / "baseline") >= 1 and epochs_in(out / "adam") >= 1


def statuses(out: Path) -> dict[str, str]:
    return {d.name: json.loads((d / "summary.json").read_text())["status"]
            for d in out.iterdir() if (d / "summary.json").exists()}


@pytest.mark.parametrize("how", ["ctrl-c to the group", "sigterm to the parent"])
def test_a_stop_interrupts_the_workers_starts_none_and_writes_the_table(
    tmp_path: Path, how: str
) -> None:
    out = tmp_path / "cmp"
    proc = start(out)
    wait_until(proc, lambda: two_training(out))
    stopped_at = time.monotonic()
    if how == "ctrl-c to the group":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=90)
    assert time.monotonic() - stopped_at < 60
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr
    assert statuses(out) == {"baseline": "interrupted", "adam": "interrupted"}
    assert not (out / "relu").exists() and not (out / "skip").exists()
    doc = json.loads((out / "compare.json").read_text())
    assert [v["name"] for v in doc["variants"]] == ["adam"]
    assert doc["skipped"] == ["relu", "skip", "weight-init"]
    assert "baseline" in stdout and "interrupted" in stdout


def test_a_killed_worker_fails_its_variant_and_the_others_go_on(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = subprocess.Popen(
        # 30 epochs: on a loaded machine 6 were done before the worker could be found.
        [sys.executable, "-m", "vgdiag", "compare", "--epochs", "30", "--depth", "2",
         "--width", "16", "--plugins", "adam,relu", "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_until(proc, lambda: epochs_in(out / "adam") >= 1)
    worker = next(p for p in _children(proc.pid) if "adam" in _environ_name(p))
    os.kill(worker, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 3, stdout + stderr  # a variant failed: training failed
    assert "Traceback" not in stderr
    doc = json.loads((out / "compare.json").read_text())
    adam = next(v for v in doc["variants"] if v["name"] == "adam")
    assert adam["state"] == "failed" and "killed by SIGKILL" in adam["reason"]
    summary = json.loads((out / "adam" / "summary.json").read_text())
    assert summary["status"] == "failed" and "SIGKILL" in summary["error"]
    assert statuses(out)["baseline"] == statuses(out)["relu"] == "completed"
    assert "failed: the worker process was killed by SIGKILL" in stdout.replace("\n", " ")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def _environ_name(pid: int) -> str:
    """The command line of a process: a spawned worker's names its variant's folder."""
    try:
        args = (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return ""
    if b"spawn_main" not in args:
        return ""
    # The variant is known from the folder the worker holds open: metrics.jsonl.
    fds = Path("/proc") / str(pid) / "fd"
    try:
        return " ".join(os.readlink(fds / fd) for fd in os.listdir(fds))
    except OSError:
        return ""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_the_board_runs_two_jobs_in_a_real_terminal(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    session = f"vgdiag-board-{os.getpid()}"
    command = (f"{sys.executable} -m vgdiag compare --tui --jobs 2 --epochs 2 --depth 2 "
               f"--width 8 --plugins adam,relu --out {out}; echo EXIT=$? > {tmp_path}/rc")
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "45",
                    command], check=True)
    try:
        deadline = time.monotonic() + 180
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout
            if "3/3 done" in screen and "finished" in screen:
                break
            if (tmp_path / "rc").exists():
                break
            time.sleep(0.5)
        assert "fds_to_keep" not in screen, screen
        assert "3/3 done" in screen, screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        while time.monotonic() < deadline and not (tmp_path / "rc").exists():
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert (tmp_path / "rc").read_text().strip() == "EXIT=0"
    assert statuses(out) == {"baseline": "completed", "adam": "completed",
                             "relu": "completed"}
    assert (out / "compare.json").exists()
