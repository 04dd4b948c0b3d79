"""The fault suite: every way a run can end, through the real CLI in subprocesses.

Each case (tests/fault_cases/cases.py) asserts the exit code, the folder's status, its
error field and its verdict. The cases run in parallel, once per session; run the
suite alone with `pytest -m faults`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_cases.cases import CASES, MODELS, Outcome, run_all, vgdiag, wait_for_torch

from vgdiag.cli.app import main
from vgdiag.runs.reader import read_run

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("faults")
    return {o.case: o for o in run_all(root, workers=4)}


def one_line_error(o: Outcome, *parts: str) -> None:
    """stderr holds one error line, no traceback, mentioning each of `parts`."""
    # Progress lines of a long data count may come first.
    lines = [x for x in o.stderr.splitlines()
             if x.strip() and not x.startswith("vgdiag: reading the data")]
    assert "Traceback" not in o.stderr, o.stderr
    assert len(lines) == 1 and lines[0].startswith("vgdiag: error: "), o.stderr
    for part in parts:
        assert part in lines[0], o.stderr


def failed_folder(o: Outcome, error_start: str) -> None:
    assert o.exit == 3, (o.stdout[-2000:], o.stderr)
    assert o.status == "failed", o
    assert o.error is not None and o.error.startswith(error_start), o.error
    assert o.verdict == f"failed: {o.error}"


def test_every_case_ran(outcomes):
    # The table of how each case ended (pytest -s shows it).
    print("\n| case | exit | status | verdict |\n|---|---|---|---|")
    for o in outcomes.values():
        print(o.row())
    assert set(outcomes) == set(CASES)
    broken = [o for o in outcomes.values() if o.status.startswith("case error")]
    assert not broken, broken


# ----- 1: user code that exits or raises KeyboardInterrupt ---------------------------


def test_exit_while_building_is_bad_input(outcomes):
    o = outcomes["1 exit(0) in __init__"]
    assert o.exit == 2 and o.status == "-"
    one_line_error(o, "SystemExit: 0", "models.py:")


@pytest.mark.parametrize("case", ["1 exit(0) in forward", "1 exit(0) in forward, --fail-on error"])
def test_exit_in_forward_fails_the_run(outcomes, case):
    o = outcomes[case]
    failed_folder(o, "SystemExit: 0 (models.py:")
    assert "Diagnosis: failed: SystemExit: 0" in o.stdout


def test_keyboard_interrupt_raised_by_code_is_a_failure_not_an_interruption(outcomes):
    o = outcomes["1 KeyboardInterrupt raised in forward"]
    failed_folder(o, "KeyboardInterrupt (models.py:")


@pytest.mark.parametrize(("case", "where"), [
    ("1 exit(0) at import", "exit_at_import.py:5"),
    ("1 KeyboardInterrupt at import", "interrupt_at_import.py:3"),
    ("1 exit(0) in the data factory", "data.py:"),
])
def test_exit_at_import_or_load_is_bad_input(outcomes, case, where):
    o = outcomes[case]
    assert o.exit == 2 and o.status == "-", o
    one_line_error(o, where)


@pytest.mark.parametrize("case", ["1 exit(0) in forward, compare",
                                  "1 exit(0) in forward, compare --jobs 2"])
def test_exit_in_forward_under_compare_writes_the_table_and_fails(outcomes, case):
    o = outcomes[case]
    failed_folder(o, "SystemExit: 0 (models.py:")
    assert o.folder is not None
    doc = json.loads((o.folder / "compare.json").read_text())
    assert doc["baseline"]["status"] == "failed"
    assert all(v["summary"]["status"] == "failed" for v in doc["variants"])


def test_exit_in_forward_under_the_dashboard(outcomes):
    o = outcomes["1 exit(0) in forward, dashboard"]
    if o.status.startswith("skipped"):
        pytest.skip(o.status)
    assert "Traceback" not in o.stderr
    failed_folder(o, "SystemExit: 0 (models.py:")


# ----- 2, 3: failed runs, one status per cause ---------------------------------------


@pytest.mark.parametrize(("case", "error"), [
    ("2 forward raised", "RuntimeError: boom at the third step (models.py:"),
    ("2 NaN crash", "RuntimeError: probability tensor contains"),
    ("3 forward returns None at step 7", "the model returns a NoneType"),
    ("3 test evaluation raised", "ValueError: the test evaluation broke (models.py:"),
])
def test_failed_runs_are_failed_everywhere(outcomes, case, error, capsys):
    o = outcomes[case]
    failed_folder(o, error)
    assert "vgdiag: training failed:" in o.stderr, o.stderr  # the error on stderr
    assert "Diagnosis: failed:" in o.stdout, o.stdout
    assert "healthy" not in o.stdout.replace("unhealthy", "")
    assert o.folder is not None
    summary = json.loads((o.folder / "summary.json").read_text())
    assert summary["test"] is None
    kind = o.error.split(":")[0].split()[0]
    for fmt in ("md", "html", "json"):
        assert main(["report", str(o.folder), "--format", fmt]) == 0
        text = capsys.readouterr().out
        if fmt == "json":
            assert json.loads(text)["verdict"] == o.verdict
        else:
            assert "failed: " in text and kind in text, (fmt, text[:1000])
        assert "Verdict: <strong>healthy" not in text and "**healthy**" not in text


def test_report_fail_on_counts_a_failed_run_as_an_error(outcomes):
    o = outcomes["2 report --fail-on error of a failed run"]
    assert o.exit == 1 and o.status == "failed"
    assert json.loads(o.stdout)["verdict"].startswith("failed: RuntimeError: boom")


# ----- 5: loading data, seeds, early signals -----------------------------------------


@pytest.mark.parametrize(("case", "parts"), [
    ("5 __getitem__ raises", ("IndexError: item 5 is missing", "data.py:")),
    ("5 __len__ negative", ("__len__() should return >= 0",)),
    ("5 IterableDataset raises", ("OSError: the stream broke", "data.py:")),
    ("5 endless IterableDataset", ("more than 20,000 samples", "looks endless")),
    ("5 --seed -1", ("--seed must be between 0 and",)),
    ("5 --seed 2**64", ("--seed must be between 0 and",)),
])
def test_bad_data_and_seeds_are_bad_input(outcomes, case, parts):
    o = outcomes[case]
    assert o.exit == 2 and o.status == "-", o
    one_line_error(o, *parts)


def test_sigterm_before_the_folder_exists(outcomes):
    o = outcomes["5 SIGTERM before the folder exists"]
    assert o.exit == 130, o
    assert o.stderr.strip().splitlines()[-1] == "vgdiag: interrupted"
    assert "Traceback" not in o.stderr


# ----- 6: corrupt folders ------------------------------------------------------------


@pytest.mark.parametrize(("case", "field"), [
    ("6 summary layers: 5", "'layers'"),
    ("6 finding without severity", "'findings'"),
    ('6 seconds: "fast"', "'seconds'"),
])
def test_corrupt_summaries_are_bad_input_for_report_and_view(outcomes, case, field):
    o = outcomes[case]
    assert o.exit == 2 and o.status == "view exit 2", o
    report_err, view_err = o.stderr.splitlines()
    for line in (report_err, view_err):
        assert "is corrupt: field " + field in line and "Traceback" not in line, o.stderr


# ----- 7: a full disk ------------------------------------------------------------------


def test_a_full_disk_fails_the_run_in_one_line(outcomes):
    o = outcomes["7 full disk while training"]
    if o.status.startswith("skipped"):
        pytest.skip(o.status)
    assert o.exit == 3, o
    assert o.status == "failed" and o.error is not None
    assert o.error.startswith("no space left on device: ") and o.error.endswith("metrics.jsonl")
    assert o.stderr.strip().splitlines()[-1] == f"vgdiag: error: {o.error}"
    files = o.stdout.split()
    assert ".summary.json.tmp" not in files and ".reserve" not in files, files


def test_report_out_on_a_full_disk_leaves_no_partial_file(outcomes):
    o = outcomes["7 report --out on a full disk"]
    if o.status.startswith("skipped"):
        pytest.skip(o.status)
    assert o.exit == 2 and o.status == "files: none", o
    one_line_error(o, "no space left on device: ")


# ----- 8: the smaller ones -------------------------------------------------------------


def test_a_broken_pipe_ends_quietly_and_keeps_the_run(outcomes):
    o = outcomes["8 broken pipe (run --headless | head -1)"]
    assert o.exit == 0, o  # --fail-on none: nothing is claimed either way
    assert o.stderr.strip() == "", o.stderr
    assert o.status == "completed"


def test_odd_names_are_quoted_and_escaped(tmp_path):
    model = tmp_path / "odd.py"
    model.write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.f = nn.Flatten()\n"
        "        self.add_module('red\\x1b[31mlayer', nn.Linear(64, 10))\n"
        "    def forward(self, x):\n"
        "        return getattr(self, 'red\\x1b[31mlayer')(self.f(x))\n")
    out = tmp_path / "a run; rm -rf x"
    proc = vgdiag("run", "--headless", "--epochs", "1", "--model", f"{model}:Net",
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    assert "red\\x1b[31mlayer" in proc.stdout.replace("\n", "")
    assert f"vgdiag report '{out}' --format html" in " ".join(proc.stdout.split())


def test_a_run_still_writing_reads_as_running(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vgdiag", "run", "--headless", "--epochs",
                             "400", "--depth", "2", "--width", "16", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                (out / "metrics.jsonl").exists()
                and '"type":"epoch"' in (out / "metrics.jsonl").read_text()):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        run = read_run(out)
        assert run.status == "running"
        assert any("still being written" in n for n in run.notes)
        report = vgdiag("report", str(out))
        assert report.returncode == 0 and "The run is still running" in report.stdout
        assert "killed or crashed" not in report.stdout
    finally:
        proc.kill()
        proc.wait()
    assert read_run(out).status == "cut off"


# ----- killed at random points -----------------------------------------------------------


KILLS = [signal.SIGKILL, signal.SIGINT, signal.SIGTERM] * 8


def test_runs_killed_at_random_points_leave_readable_folders(tmp_path, capsys):
    rng = random.Random(20261201)
    victims: list[tuple[signal.Signals, Path, subprocess.Popen[str]]] = []
    pending = list(enumerate(KILLS))
    batch = 6
    results = []
    while pending:
        group, pending = pending[:batch], pending[batch:]
        victims = []
        for i, sig in group:
            out = tmp_path / f"run{i:02d}"
            argv = [sys.executable, "-m", "vgdiag", "run", "--headless", "--epochs", "60",
                    "--every", "1", "--hist-every", "1", "--device", "cpu", "--out", str(out)]
            if i % 3 == 2:  # some runs are a user model, which is imported and checked first
                argv += ["--model", f"{MODELS}:Slow"]
            else:  # the built-in MLP, small (a user model refuses these options)
                argv += ["--depth", "2", "--width", "16"]
            victims.append((sig, out, subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                                       stderr=subprocess.PIPE, text=True)))
        deadline = time.monotonic() + 180
        for k, (sig, out, proc) in enumerate(victims):
            # Half are killed once training writes, half at any moment from the start.
            if k % 2 == 0:
                while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 1.0))
            else:
                wait_for_torch(proc)
                time.sleep(rng.uniform(0.0, 3.0))
            proc.send_signal(sig)
        for sig, out, proc in victims:
            _, stderr = proc.communicate(timeout=180)  # six at once on a loaded machine
            results.append((sig, out, proc.returncode, stderr))
    folders = 0
    for sig, out, code, stderr in results:
        assert "Traceback" not in stderr, (sig, stderr)
        if sig == signal.SIGKILL:
            assert code == -signal.SIGKILL or code == 0, (sig, code, stderr)
        else:
            assert code in (130, 0), (sig, code, stderr)  # 0: it finished first
        if not (out / "summary.json").exists() and not (out / "metrics.jsonl").exists():
            continue  # killed before it wrote anything
        folders += 1
        run = read_run(out)
        expected = {signal.SIGKILL: {"cut off", "completed"},
                    signal.SIGINT: {"interrupted", "completed"},
                    signal.SIGTERM: {"interrupted", "completed"}}[sig]
        assert run.status in expected, (sig, out, run.status, run.notes)
        assert main(["report", str(out), "--format", "md"]) == 0
        assert main(["view", "--check", str(out)]) == 0
        capsys.readouterr()
        assert not (out / ".summary.json.tmp").exists() or sig == signal.SIGKILL
    assert folders >= len(KILLS) // 2, f"only {folders} runs got as far as their folder"
    assert os.environ.get("VGDIAG_DEBUG") is None
