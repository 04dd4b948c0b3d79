"""The run folder written as the run goes: config.json, metrics.jsonl, summary.json.

What each file holds and how it is written safely is in `folder.py`; reading a
folder back is `reader.py`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vgdiag.engine import events as ev
from vgdiag.engine.records import Finding
from vgdiag.engine.status import RunStatus
from vgdiag.engine.summary import SCHEMA_VERSION, RunSummary
from vgdiag.errors import RunFolderError
from vgdiag.runs.folder import (
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    dumps,
    prepare_run_dir,
    write_json_atomic,
    writer_stamp,
)

# Between epochs the summary is rewritten at most this often: a short epoch should not
# pay a file rewrite each time, and a reader of a cut-off run recomputes the rest from
# metrics.jsonl, which is written as it happens.
SUMMARY_INTERVAL_S = 2.0
# Room kept aside while a run writes, given back when the disk fills up, so that the
# folder can still say it failed and why. Removed when the run ends.
RESERVE_FILE = ".reserve"
RESERVE_BYTES = 64 * 1024



def _dump(obj: Any) -> str:
    return dumps(obj, separators=(",", ":"))


def _write_failure(exc: OSError, path: Path) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device: {path}"
    return f"cannot write {path}: {exc.strerror or exc}"


def _metrics_line(event: ev.Event) -> dict[str, Any] | None:
    """The metrics.jsonl line an event adds as the run goes, if any."""
    if isinstance(event, (ev.StepSampled, ev.EpochEnded)):
        return event.record.to_json()
    if isinstance(event, ev.StageStarted):
        return {"type": "stage", "index": event.index, "name": event.name,
                "epochs": event.epochs, "trainable": event.trainable}
    return None


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
        try:
            self._guarded(self._reserve, self.path / RESERVE_FILE)
            self._guarded(self._write_summary, self.path / SUMMARY_FILE)
        except KeyboardInterrupt:  # the folder exists: it must not read "running"
            self.close()
            raise

    def _reserve(self) -> None:
        with open(self.path / RESERVE_FILE, "wb") as f:
            f.write(bytes(RESERVE_BYTES))
            f.flush()
            os.fsync(f.fileno())

    def _release(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / RESERVE_FILE).unlink()

    def handle(self, event: ev.Event) -> None:
        """Fold `event` in and write what it adds; RunFolderError when that fails."""
        if self.write_error is not None:
            return  # the folder already says why it stopped
        line = _metrics_line(event)
        if line is not None:
            # Written before it is folded in: a Ctrl-C between the two keeps the record.
            self._guarded(lambda: self._append(line), self.path / METRICS_FILE)
        self.run.apply(event)
        self._guarded(lambda: self._write(event), self.path / METRICS_FILE)

    def _write(self, event: ev.Event) -> None:
        if isinstance(event, ev.RunStarted):
            write_json_atomic(self.path / CONFIG_FILE, {"schema_version": SCHEMA_VERSION,
                                                         **self.run.config})
        elif isinstance(event, ev.EpochEnded):
            if time.monotonic() - self._summary_at >= SUMMARY_INTERVAL_S:
                self._write_summary(durable=False)
        elif isinstance(event, ev.RunFinished):
            self._write_summary()
        elif isinstance(event, ev.RunFailed):
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
            doc["writer"] = writer_stamp()
        return doc

    def _write_summary(self, durable: bool = True) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, self.summary(), durable=durable)
        self._summary_at = time.monotonic()
