"""A run folder's files, its name, its safe writes, and who is writing it.

- metrics.jsonl is appended and flushed per record, never rewritten, so a killed run
  leaves every complete line readable.
- summary.json is replaced atomically (write a temp file, then rename) at the start,
  after every epoch and at the end; its `status` says how the run ended. A summary
  still saying "running" means the process died without a word (kill -9, power),
  unless the process it names (`writer`) still runs on this machine (a zombie, exited
  but not yet reaped, does not).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vgdiag.errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
COMPARE_FILE = "compare.json"  # a compare's folder: its table, beside one folder per variant


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """runs/<timestamp>-<name>, made unique if two runs start in the same second."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return free_path(root, f"{stamp}-{safe}")


def free_path(folder: Path, stem: str, suffix: str = "",
              taken: Callable[[Path], bool] = Path.exists) -> Path:
    """`folder/stem+suffix`, or `stem-2`, `stem-3`... while `taken` says that one is."""
    path, n = folder / f"{stem}{suffix}", 1
    while taken(path):
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder (or accept an empty one); UserError when that cannot be."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file: give a folder path for the run")
    if path.exists() and any(path.iterdir()):
        raise UserError(f"--out {path} already holds files: give a new or empty folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to --out {path}: {exc.strerror or exc}") from None
    return path


def json_default(obj: Any) -> Any:
    """numpy arrays and scalars as plain JSON; anything else by its str()."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


# A JSON string, or one of the non-standard tokens Python's json writes for floats.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|-?Infinity|NaN')
_STRICT = {"Infinity": "1e999", "-Infinity": "-1e999", "NaN": "null"}


def dumps(obj: Any, *, indent: int | None = None,
          separators: tuple[str, str] | None = None) -> str:
    """JSON that every parser reads: +-inf as 1e999 / -1e999 (valid JSON numbers that
    Python, JavaScript and jq read back as +-inf or the largest double), NaN as null
    (JSON's "not measured"). Python's json alone writes Infinity and NaN, which
    strict parsers (JSON.parse, jq, serde) refuse."""
    text = json.dumps(obj, indent=indent, separators=separators, default=json_default)
    if "Infinity" not in text and "NaN" not in text:
        return text
    return _TOKENS.sub(lambda m: _STRICT.get(m.group(0), m.group(0)), text)


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True,
                      indent: int | None = 2) -> None:
    """Replace `path` in one rename, so a reader never sees half a file.

    `durable` also fsyncs, so the content survives a power cut, not only a killed
    process; the per-epoch summaries skip it (the final one does not).
    """
    text = dumps(obj, indent=indent) + "\n"
    write_text_atomic(path, text, durable=durable)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Write a whole text file in one rename: never a partial or empty file. A write
    that fails leaves no temporary file behind.

    Only a regular file is replaced, keeping its permissions. A symbolic link is kept
    and its target written. A device or a pipe (`--out /dev/null`, `/dev/stdout`, a
    FIFO), or any path under /dev or /proc, is appended to: renamed over, /dev/null
    would become a file, for every program on the machine when run as root, and
    `/dev/stdout` redirected to a log (`>> log`) would lose the log's earlier lines.
    """
    try:
        found = os.stat(path)  # through links, /proc's fd links included
    except FileNotFoundError:
        found = None
    special = Path(os.path.abspath(path)).parts[1:2] in (("dev",), ("proc",))
    if special or (found is not None and not stat.S_ISREG(found.st_mode)):
        with open(path, "a", encoding="utf-8") as f:  # a directory raises IsADirectoryError
            f.write(text)
        return
    target = Path(os.path.realpath(path))  # a dangling link: its target is made
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if found is not None:
                os.chmod(f.fileno(), stat.S_IMODE(found.st_mode))
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


# ----- who is writing ----------------------------------------------------------------


def writer_stamp() -> dict[str, Any]:
    """summary.json's `writer` while a run is in progress: this process, this machine."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


# Linux's process table as files; where it is absent, a pid's existence is all we know.
PROC = Path("/proc")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine: one that has exited but
    is not yet reaped by its parent (a zombie, as a `kill -9`ed writer is for a while)
    does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process, which exists
        pass
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """Whether /proc says this process has exited (state Z, zombie, or X, dead); False
    where /proc cannot tell (not Linux, or no such entry)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows
    # the last ")".
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] in ("Z", "X")


def writer_gone(summary: dict[str, Any], alive: Callable[[int], bool] = pid_alive) -> bool | None:
    """True/False when the summary names a writer on this machine, None when it cannot tell."""
    writer = summary.get("writer")
    if not isinstance(writer, dict):
        return None
    pid, host = writer.get("pid"), writer.get("host")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 \
            or host != socket.gethostname():
        return None
    return not alive(pid)
