"""The run folder: config.json, metrics.jsonl and summary.json, crash-safe.

- metrics.jsonl is appended and flushed per record, never rewritten, so a killed run
  leaves every complete line readable.
- summary.json is replaced atomically (write a temp file, then rename) at the start,
  after every epoch and at the end; its `status` says how the run ended. A summary
  still saying "running" means the process died without a word (kill -9, power).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StageStarted,
    StepSampled,
)
from vgdiag.engine.records import SEVERITIES, EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.status import WRITTEN_STATUSES, RunStatus
from vgdiag.engine.summary import SCHEMA_VERSION, RunSummary
from vgdiag.errors import RunFolderError, UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# Between epochs the summary is rewritten at most this often: a short epoch should not
# pay a file rewrite each time, and a reader of a cut-off run recomputes the rest from
# metrics.jsonl, which is written as it happens.
SUMMARY_INTERVAL_S = 2.0
# Room kept aside while a run writes, given back when the disk fills up, so that the
# folder can still say it failed and why. Removed when the run ends.
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 64 * 1024


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


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True,
                      indent: int | None = 2) -> None:
    """Replace `path` in one rename, so a reader never sees half a file.

    `durable` also fsyncs, so the content survives a power cut, not only a killed
    process; the per-epoch summaries skip it (the final one does not).
    """
    text = json.dumps(obj, indent=indent, default=_json_default) + "\n"
    write_text_atomic(path, text, durable=durable)


def write_text_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    """Write a whole text file in one rename: never a partial or empty file. A write
    that fails leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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


def _write_failure(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device: {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


class RunStore:
    """A sink that writes the event stream into a run folder.

    The run's state is the one fold of the stream (`RunSummary`); this class only
    decides what goes to disk when. A write that fails raises RunFolderError after
    marking the folder failed, so training stops instead of recording into nothing.
    """

    def __init__(self, path: Path, name: str = "", num_classes: int = 0) -> None:
        self.path = prepare_run_dir(path)
        self.name = name
        self.num_classes = num_classes
        self.run = RunSummary(name=name, num_classes=num_classes)
        self.write_error: str | None = None
        # Held open for the whole run and closed in close(): one flush per record.
        self._metrics: IO[str] = open(self.path / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._closed = False
        self._summary_at = 0.0
        self._guarded(self._reserve, self.path / RESERVE_FILE)
        self._guarded(self._write_summary, self.path / SUMMARY_FILE)

    def _reserve(self) -> None:
        with open(self.path / RESERVE_FILE, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
            f.flush()
            os.fsync(f.fileno())

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / RESERVE_FILE).unlink()

    def handle(self, event: Event) -> None:
        """Fold `event` in and write what it adds; RunFolderError when that fails."""
        if self.write_error is not None:
            return  # the folder already says why it stopped
        self.run.apply(event)
        self._guarded(lambda: self._write(event), self.path / METRICS_FILE)

    def _write(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            write_json_atomic(self.path / CONFIG_FILE, {"schema_version": SCHEMA_VERSION,
                                                         **self.run.config})
        elif isinstance(event, StepSampled):
            self._append(event.record.to_json())
        elif isinstance(event, StageStarted):
            self._append({"type": "stage", "index": event.index, "name": event.name,
                          "epochs": event.epochs, "trainable": event.trainable})
        elif isinstance(event, EpochEnded):
            self._append(event.record.to_json())
            if time.monotonic() - self._summary_at >= SUMMARY_INTERVAL_S:
                self._write_summary(durable=False)
        elif isinstance(event, RunFinished):
            self._write_summary()
        elif isinstance(event, RunFailed):
            self._append({"type": "error", "error": self.run.error,
                          "traceback": event.traceback})
            self._write_summary()

    def _guarded(self, write: Callable[[], None], path: Path) -> None:
        try:
            write()
        except OSError as exc:
            failed = exc.filename or path
            self.write_error = _write_failure(exc, Path(failed))
            self.run.fail(self.write_error)
            self._release()  # the room kept for this moment
            # The folder must not keep saying "running".
            with contextlib.suppress(OSError):
                write_json_atomic(self.path / SUMMARY_FILE, self.summary(), indent=None)
            raise RunFolderError(self.write_error) from exc

    def mark_interrupted(self, findings: list[Finding] | None = None) -> None:
        """For a stream cut short outside the trainer (e.g. a second Ctrl-C)."""
        if self.write_error is None and self.run.interrupt(findings):
            self._guarded(self._write_summary, self.path / SUMMARY_FILE)

    def mark_failed(self, error: str, traceback: str = "") -> None:
        """For a run that failed outside the trainer's stream (a front end's own error)."""
        if self.write_error is None and not self.run.finished:
            self.handle(self.run.failure(error, traceback))

    def _append(self, obj: dict[str, Any]) -> None:
        self._metrics.write(_dump(obj) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.mark_interrupted()
        finally:
            with contextlib.suppress(OSError):
                self._metrics.close()
            self._release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def status(self) -> RunStatus:
        return self.run.status

    @property
    def findings(self) -> list[Finding]:
        return list(self.run.findings)

    def summary(self) -> dict[str, Any]:
        doc = self.run.to_json()
        if not self.run.finished:
            # Who is writing: a reader on this machine tells a run in progress from a
            # cut-off one by whether this process still lives.
            doc["writer"] = {"pid": os.getpid(), "host": socket.gethostname()}
        return doc

    def _write_summary(self, durable: bool = True) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, self.summary(), durable=durable)
        self._summary_at = time.monotonic()


# ----- reading ---------------------------------------------------------------------


@dataclass
class RunData:
    """A run folder read back: what `report`, `view` and `compare` work from."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]  # summary.json, its known fields checked for type
    records: list[StepRecord]
    epochs: list[EpochRecord]
    layers: list[LayerInfo]
    findings: list[Finding]
    status: RunStatus  # completed | interrupted | failed | running | cut off
    notes: list[str] = field(default_factory=list)  # what the reader had to skip or guess
    state: RunSummary = field(default_factory=RunSummary)  # the fold of the folder's events

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.name)

    @property
    def error(self) -> str | None:
        return self.state.error

    @property
    def verdict(self) -> str:
        return self.state.verdict


def read_run(path: Path) -> RunData:
    """Read a run folder, tolerating a truncated last line; UserError when unusable.

    The run is replayed: its events (metrics.jsonl, then the end summary.json
    records) are folded by the same `RunSummary` that wrote it.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: give the run folder written by `vgdiag run`")
    summary_path = path / SUMMARY_FILE
    metrics_path = path / METRICS_FILE
    if not summary_path.exists() and not metrics_path.exists():
        raise UserError(f"{path} is not a vgdiag run folder (no {SUMMARY_FILE} or {METRICS_FILE})")
    notes: list[str] = []
    raw = _read_json(summary_path) if summary_path.exists() else {}
    summary, parsed = _checked_summary(raw, summary_path)
    config = _read_json(path / CONFIG_FILE) if (path / CONFIG_FILE).exists() else {}
    if not isinstance(config, dict):
        raise UserError(f"{path / CONFIG_FILE} is corrupt: expected a JSON object")
    lines = _read_metrics(metrics_path, notes) if metrics_path.exists() else []
    records = [x for x in lines if isinstance(x, StepRecord)]
    epochs = [x for x in lines if isinstance(x, EpochRecord)]
    layers: list[LayerInfo] = parsed["layers"]
    if not layers and records:
        layers = [
            LayerInfo(name=n, kind="", depth=i, num_params=0, param_names=())
            for i, n in enumerate(records[-1].layers)
        ]
    # A truncated last line must not hide an epoch the summary was rewritten with.
    written = {e.epoch for e in epochs}
    later = [e for e in parsed["epochs"] if e.epoch not in written]
    if later:
        epochs = sorted([*epochs, *later], key=lambda e: e.epoch)
        if lines:
            notes.append(f"{len(later)} epoch(s) missing from {METRICS_FILE} were taken "
                         f"from {SUMMARY_FILE}")
    state = RunSummary(name=str(summary.get("name") or ""),
                       num_classes=summary["num_classes"], config=config)
    for event in _events(lines, layers, epochs):
        state.apply(event)
    status = RunStatus.parse(summary.get("status", RunStatus.RUNNING)) or RunStatus.RUNNING
    findings: list[Finding] = parsed["findings"]
    if status == RunStatus.RUNNING:
        if _writer_alive(raw.get("writer")):
            notes.append("the run is still being written: this is how it stands now")
        else:
            status = RunStatus.CUT_OFF
            notes.append("the run was cut off: its process ended without finishing the folder")
        if records:
            # The summary is from the last finished epoch (or the start): the metrics
            # written after it may show more, so the diagnosis is made again from them.
            findings = diagnose(records, layers, epochs, summary["num_classes"])
            notes.append("findings were recomputed from the metrics the run wrote")
    state.findings = list(findings)
    if status == RunStatus.FAILED:
        state.apply(RunFailed(error=summary["error"] or "", traceback=state.traceback or "",
                              layers=layers, findings=findings, seconds=summary["seconds"],
                              steps_done=summary["steps"]))
    elif status.final:
        state.apply(RunFinished(status=status, layers=layers, test=summary["test"],
                                findings=findings, seconds=summary["seconds"],
                                steps_done=summary["steps"]))
        state.status = status
    else:
        state.layers = layers or state.layers
        state.seconds = summary["seconds"] or state.seconds
    summary["verdict"] = state.verdict
    return RunData(path, config, summary, records, epochs, layers, findings, status, notes, state)


def replay_folder(path: Path) -> RunSummary:
    """The fold of a saved run's events: the same state a live consumer would hold."""
    return read_run(path).state


def _events(lines: list[Any], layers: list[LayerInfo], epochs: list[EpochRecord]) -> list[Event]:
    events: list[Event] = []
    by_epoch = {e.epoch: e for e in epochs}
    for item in lines:
        if isinstance(item, StepRecord):
            events.append(StepSampled(item, layers, item.step + 1, 0.0))
        elif isinstance(item, EpochRecord) and by_epoch.get(item.epoch) is item:
            events.append(EpochEnded(item, []))
        elif isinstance(item, StageStarted):
            events.append(item)
    for epoch in epochs:  # those only the summary had
        if not any(isinstance(x, EpochRecord) and x.epoch == epoch.epoch for x in lines):
            events.append(EpochEnded(epoch, []))
    return events


def _writer_alive(writer: Any) -> bool:
    """Whether the process that wrote a "running" summary still runs, on this machine."""
    if not isinstance(writer, dict) or writer.get("host") != socket.gethostname():
        return False
    pid = writer.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{path} is corrupt or not JSON ({exc}): it cannot be read") from None


def _checked_summary(raw: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json with its numbers converted, and its layers, epochs and findings
    parsed; UserError naming the field that is not what vgdiag writes."""
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a vgdiag summary (expected a JSON object)")
    version = raw.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise UserError(f"{path} is not a vgdiag summary (bad schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path.parent} was written by a newer vgdiag (schema {version}, this one reads "
            f"{SCHEMA_VERSION}): upgrade vgdiag to read it"
        )
    out = dict(raw)
    parsed: dict[str, Any] = {}
    key = ""

    def number(value: Any, kind: type) -> Any:
        if value is None:
            return kind(0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        return kind(value)

    def listed(value: Any) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(x, dict) for x in value):
            raise TypeError(f"expected a list of objects, got {_short(value)}")
        return value

    try:
        key = "status"
        if "status" in raw and RunStatus.parse(raw["status"]) not in WRITTEN_STATUSES:
            raise ValueError(f"unknown status {raw['status']!r}")
        for key, kind in (("seconds", float), ("steps", int), ("num_classes", int)):
            out[key] = number(raw.get(key), kind)
        key = "name"
        if not isinstance(raw.get("name", ""), (str, type(None))):
            raise TypeError(f"expected a string, got {_short(raw['name'])}")
        key = "error"
        if not isinstance(raw.get("error"), (str, type(None))):
            raise TypeError(f"expected a string, got {_short(raw['error'])}")
        key = "test"
        test = raw.get("test")
        if test is not None and not (isinstance(test, dict) and all(
                isinstance(v, (int, float, type(None))) for v in test.values())):
            raise TypeError(f"expected {{'loss', 'acc'}} numbers, got {_short(test)}")
        key = "layers"
        parsed["layers"] = [LayerInfo.from_json(d) for d in listed(raw.get("layers"))]
        key = "epochs"
        parsed["epochs"] = [EpochRecord.from_json(e) for e in listed(raw.get("epochs"))]
        key = "findings"
        parsed["findings"] = [_finding(d) for d in listed(raw.get("findings"))]
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
        raise UserError(
            f"{path} is corrupt: field {key!r} is not what vgdiag writes ({detail}); "
            "rerun the training or restore the file"
        ) from None
    return out, parsed


def _finding(data: dict[str, Any]) -> Finding:
    for key in ("id", "severity"):
        if not isinstance(data.get(key), str):
            raise TypeError(f"a finding without a {key}")
    if data["severity"] not in SEVERITIES:
        raise ValueError(f"unknown severity {data['severity']!r}")
    for key in ("layers", "recommend"):
        if not isinstance(data.get(key, []), list):
            raise TypeError(f"a finding's {key} is not a list")
    if not isinstance(data.get("evidence", {}), dict):
        raise TypeError("a finding's evidence is not an object")
    return Finding.from_json(data)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_metrics(path: Path, notes: list[str]) -> list[Any]:
    """The records of metrics.jsonl in order: StepRecord, EpochRecord, StageStarted."""
    items: list[Any] = []
    bad = 0
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            kind = obj.get("type")
            if kind == "step":
                items.append(StepRecord.from_json(obj))
            elif kind == "epoch":
                items.append(EpochRecord.from_json(obj))
            elif kind == "stage":
                items.append(StageStarted(int(obj["index"]), str(obj["name"]),
                                          int(obj["epochs"]), list(obj.get("trainable", []))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
                RecursionError):
            bad += 1
    if bad:
        notes.append(f"skipped {bad} incomplete or corrupt line(s) in {METRICS_FILE}")
    if lines and not items and bad:
        raise UserError(f"{path} holds no readable vgdiag metrics: is this a vgdiag run folder?")
    return items
