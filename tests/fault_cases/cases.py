"""The fault cases: each runs the real CLI in a subprocess and reports how it ended.

Shared by tests/test_faults.py (which asserts on each outcome) and by running this
file directly, which prints the table case | exit | status | verdict.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models.py"
DATA = HERE / "data.py"
TINY = ["--epochs", "2", "--every", "1", "--hist-every", "0", "--device", "cpu"]
TIMEOUT = 300  # generous: the suite may share a loaded machine


@dataclass
class Outcome:
    case: str
    exit: int | None
    status: str  # the folder's summary.json status, "-" without a folder
    error: str | None
    verdict: str
    stdout: str
    stderr: str
    folder: Path | None

    @property
    def last_err(self) -> str:
        lines = [x for x in self.stderr.strip().splitlines() if x.strip()]
        return lines[-1] if lines else ""

    def row(self) -> str:
        verdict = self.verdict.replace("|", "/")
        return f"| {self.case} | {self.exit} | {self.status} | {verdict} |"


def vgdiag(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                          text=True, timeout=kw.pop("timeout", TIMEOUT), **kw)


def read_folder(folder: Path | None) -> tuple[str, str | None, str]:
    if folder is None or not (folder / "summary.json").exists():
        return "-", None, "-"
    try:
        s = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})", None, "-"
    return str(s.get("status")), s.get("error"), str(s.get("verdict"))


def outcome(case: str, proc: subprocess.CompletedProcess[str] | None, folder: Path | None,
            *, code: int | None = None, stdout: str = "", stderr: str = "") -> Outcome:
    status, error, verdict = read_folder(folder)
    if proc is not None:
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    return Outcome(case, code, status, error, verdict, stdout, stderr,
                   folder if folder and folder.exists() else None)


def _run(case: str, tmp: Path, *args: str, env: dict[str, str] | None = None) -> Outcome:
    out = tmp / "run"
    proc = vgdiag("run", "--headless", *TINY, *args, "--out", str(out),
                  env={**os.environ, **(env or {})})
    return outcome(case, proc, out)


def model(name: str) -> list[str]:
    return ["--model", f"{MODELS}:{name}"]


def data(name: str) -> list[str]:
    return ["--data", f"{DATA}:{name}"]


def _compare(case: str, tmp: Path, *args: str) -> Outcome:
    out = tmp / "cmp"
    proc = vgdiag("compare", *TINY, "--plugins", "adam", *args, "--out", str(out))
    o = outcome(case, proc, out / "baseline")
    o.folder = out if out.exists() else None
    return o


def _signal_before_folder(case: str, tmp: Path) -> Outcome:
    out = tmp / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vgdiag", "run", "--headless", *TINY,
                             "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.8)  # the interpreter is up, torch is still importing
    created = out.exists()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    if created:
        stderr = "(folder existed before the signal)\n" + stderr
    return outcome(case, None, out, code=proc.returncode, stdout=stdout, stderr=stderr)


def _reference_folder(tmp: Path) -> Path:
    out = tmp / "good"
    proc = vgdiag("run", "--headless", *TINY, "--epochs", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


def _corrupt(edit: Callable[[dict], None]) -> Callable[[str, Path], Outcome]:
    def case(name: str, tmp: Path) -> Outcome:
        folder = _reference_folder(tmp)
        summary = json.loads((folder / "summary.json").read_text())
        edit(summary)
        (folder / "summary.json").write_text(json.dumps(summary))
        report = vgdiag("report", str(folder))
        view = load_view(folder)
        o = outcome(name, report, None)
        o.stderr = (f"report: {report.stderr.strip()[-300:]}\nview: exit {view.returncode} "
                    f"{view.stderr.strip()[-300:]}")
        o.status = f"view exit {view.returncode}"
        return o

    return case


def load_view(folder: Path) -> subprocess.CompletedProcess[str]:
    """`vgdiag view`'s loading path, without opening a terminal."""
    code = ("import sys; from vgdiag.cli.app import main; "
            "sys.exit(main(['view', '--check', sys.argv[1]]))")
    return subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                          text=True, timeout=TIMEOUT)


def _set_layers(s: dict) -> None:
    s["layers"] = 5


def _drop_severity(s: dict) -> None:
    s["findings"] = [{"id": "vanishing_gradient", "message": "x", "layers": []}]


def _bad_seconds(s: dict) -> None:
    s["seconds"] = "fast"


def _full_disk(case: str, tmp: Path) -> Outcome:
    mount = tmp / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return Outcome(case, None, "skipped: cannot mount a small tmpfs", None, "-", "",
                       made.stderr, None)
    try:
        out = mount / "run"
        proc = vgdiag("run", "--headless", *TINY, "--epochs", "5", "--hist-every", "1",
                      "--out", str(out))
        o = outcome(case, proc, out)
        o.stdout = "\n".join(sorted(p.name for p in out.iterdir())) if out.exists() else ""
        o.folder = None
        return o
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _report_out_full(case: str, tmp: Path) -> Outcome:
    folder = _reference_folder(tmp)
    mount = tmp / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return Outcome(case, None, "skipped: cannot mount a small tmpfs", None, "-", "",
                       made.stderr, None)
    try:
        target = mount / "report.html"
        proc = vgdiag("report", str(folder), "--format", "html", "--out", str(target))
        o = outcome(case, proc, None)
        o.stdout = ", ".join(f"{p.name}:{p.stat().st_size}" for p in mount.iterdir())
        o.status = "files: " + (o.stdout or "none")
        return o
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _report_fail_on_failed(case: str, tmp: Path) -> Outcome:
    first = _run(case, tmp, *model("RaiseInForward"))
    assert first.folder is not None
    proc = vgdiag("report", str(first.folder), "--format", "json", "--fail-on", "error")
    o = outcome(case, proc, first.folder)
    return o


def _seed(value: str) -> Callable[[str, Path], Outcome]:
    return lambda case, tmp: _run(case, tmp, "--seed", value)


def _dashboard_exit(case: str, tmp: Path) -> Outcome:
    """The dashboard on a pseudo-terminal (tmux), the model exiting mid-training."""
    if shutil.which("tmux") is None:
        return Outcome(case, None, "skipped: no tmux", None, "-", "", "", None)
    out = tmp / "run"
    rc_file = tmp / "rc"
    err_file = tmp / "err"
    cmd = (f"{sys.executable} -m vgdiag run {' '.join(TINY)} {' '.join(model('ExitInForward'))}"
           f" --out {out} 2>{err_file}; echo $? > {rc_file}")
    session = f"vgdiag-fault-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", cmd],
                   check=True)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.3)
            if (out / "summary.json").exists() and read_folder(out)[0] not in ("running", "-"):
                # the run ended: the dashboard waits for q
                subprocess.run(["tmux", "send-keys", "-t", session, "q"], capture_output=True)
        code = int(rc_file.read_text()) if rc_file.exists() else None
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    stderr = err_file.read_text() if err_file.exists() else ""
    return outcome(case, None, out, code=code, stderr=stderr)


def _broken_pipe(case: str, tmp: Path) -> Outcome:
    out = tmp / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vgdiag", "run", "--headless", *TINY,
                             "--epochs", "20", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    stderr = proc.stderr.read() if proc.stderr else ""
    proc.wait(timeout=TIMEOUT)
    return outcome(case, None, out, code=proc.returncode, stderr=stderr)


CASES: dict[str, Callable[[str, Path], Outcome]] = {
    "1 exit(0) in __init__": lambda c, t: _run(c, t, *model("ExitInInit")),
    "1 exit(0) in forward": lambda c, t: _run(c, t, *model("ExitInForward")),
    "1 exit(0) in forward, --fail-on error":
        lambda c, t: _run(c, t, *model("ExitInForward"), "--fail-on", "error"),
    "1 KeyboardInterrupt raised in forward": lambda c, t: _run(c, t, *model("InterruptInForward")),
    "1 exit(0) at import": lambda c, t: _run(c, t, "--model", f"{HERE / 'exit_at_import.py'}:Net"),
    "1 KeyboardInterrupt at import":
        lambda c, t: _run(c, t, "--model", f"{HERE / 'interrupt_at_import.py'}:Net"),
    "1 exit(0) in the data factory": lambda c, t: _run(c, t, *data("exits")),
    "1 exit(0) in forward, compare": lambda c, t: _compare(c, t, *model("ExitInForward")),
    "1 exit(0) in forward, compare --jobs 2":
        lambda c, t: _compare(c, t, *model("ExitInForward"), "--jobs", "2"),
    "1 exit(0) in forward, dashboard": _dashboard_exit,
    "2 forward raised": lambda c, t: _run(c, t, *model("RaiseInForward")),
    "2 NaN crash": lambda c, t: _run(c, t, *model("NanCrash")),
    "2 report --fail-on error of a failed run": _report_fail_on_failed,
    "3 forward returns None at step 7": lambda c, t: _run(c, t, *model("NoneAtStep7")),
    "3 test evaluation raised":
        lambda c, t: _run(c, t, *model("FailInTest"), "--epochs", "1"),
    "5 __getitem__ raises": lambda c, t: _run(c, t, *data("getitem_raises")),
    "5 __len__ negative": lambda c, t: _run(c, t, *data("negative_len")),
    "5 IterableDataset raises": lambda c, t: _run(c, t, *data("iter_raises")),
    "5 endless IterableDataset":
        lambda c, t: _run(c, t, *data("endless"), env={"VGDIAG_MAX_STREAM_SAMPLES": "20000"}),
    "5 --seed -1": _seed("-1"),
    "5 --seed 2**64": _seed(str(2**64)),
    "5 SIGTERM before the folder exists": _signal_before_folder,
    "6 summary layers: 5": _corrupt(_set_layers),
    "6 finding without severity": _corrupt(_drop_severity),
    "6 seconds: \"fast\"": _corrupt(_bad_seconds),
    "7 full disk while training": _full_disk,
    "7 report --out on a full disk": _report_out_full,
    "8 broken pipe (run --headless | head -1)": _broken_pipe,
}


def run_all(root: Path, names: list[str] | None = None, workers: int = 3) -> list[Outcome]:
    names = names or list(CASES)

    def one(i_name: tuple[int, str]) -> Outcome:
        i, name = i_name
        tmp = root / f"case{i:02d}"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            return CASES[name](name, tmp)
        except Exception as exc:  # a broken case is shown, not hidden
            return Outcome(name, None, f"case error: {exc!r}", None, "-", "", "", None)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, enumerate(names)))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        t0 = time.monotonic()
        results = run_all(Path(d), sys.argv[1:] or None)
        print("| case | exit | status | verdict |\n|---|---|---|---|")
        for r in results:
            print(r.row())
        print(f"\n({time.monotonic() - t0:.0f} s)\n")
        for r in results:
            print(f"## {r.case}: exit {r.exit}; error {r.error!r}\n   stderr: {r.last_err[:300]}")
