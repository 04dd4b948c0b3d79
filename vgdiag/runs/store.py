"""The run folder: config.json, metrics.jsonl and summary.json, crash-safe.

- metrics.jsonl is appended and flushed per record, never rewritten, so a killed run
  leaves every complete line readable.
- summary.json is replaced atomically (write a temp file, then rename) at the start,
  after every epoch and at the end; its `status` says how the run ended. A summary
  still saying "running" means the process died without a word (kill -9, power).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vgdiag.engine.diagnosis import diagnose, verdict
from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StageStarted,
    StepSampled,
)
from vgdiag.engine.gradflow import block_summary
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord, jsonable
from vgdiag.errors import UserError

SCHEMA_VERSION = 1
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
# Between epochs the summary is rewritten at most this often: a short epoch should not
# pay a file rewrite each time, and a reader of a cut-off run recomputes the rest from
# metrics.jsonl, which is written as it happens.
SUMMARY_INTERVAL_S = 2.0


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


def write_json_atomic(path: Path, obj: Any, *, durable: bool = True) -> None:
    """Replace `path` in one rename, so a reader never sees half a file.

    `durable` also fsyncs, so the content survives a power cut, not only a killed
    process; the per-epoch summaries skip it (the final one does not).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


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


class RunStore:
    """A sink that writes the event stream into a run folder."""

    def __init__(self, path: Path, name: str = "", num_classes: int = 0) -> None:
        self.path = prepare_run_dir(path)
        self.name = name
        self.num_classes = num_classes
        # Held open for the whole run and closed in close(): one flush per record.
        self._metrics: IO[str] = open(self.path / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._config: dict[str, Any] = {}
        self._epochs: list[EpochRecord] = []
        self._first: StepRecord | None = None
        self._last: StepRecord | None = None
        self._layers: list[LayerInfo] = []
        self._findings: list[Finding] = []
        self._status = "running"
        self._test: dict[str, float] | None = None
        self._error: str | None = None
        self._seconds = 0.0
        self._steps = 0
        self._closed = False
        self._summary_at = 0.0
        self._write_summary()

    def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._config = dict(event.config)
            write_json_atomic(self.path / CONFIG_FILE, {"schema_version": SCHEMA_VERSION,
                                                         **self._config})
        elif isinstance(event, StepSampled):
            self._first = self._first or event.record
            self._last = event.record
            self._layers = event.layers
            self._steps = event.steps_done
            self._seconds = event.seconds
            self._append(event.record.to_json())
        elif isinstance(event, StageStarted):
            self._append({"type": "stage", "index": event.index, "name": event.name,
                          "epochs": event.epochs, "trainable": event.trainable})
        elif isinstance(event, EpochEnded):
            self._epochs.append(event.record)
            self._findings = event.findings
            self._steps = event.record.steps
            self._append(event.record.to_json())
            if time.monotonic() - self._summary_at >= SUMMARY_INTERVAL_S:
                self._write_summary(durable=False)
        elif isinstance(event, RunFinished):
            self._finish(event.status, event.layers, event.findings, event.seconds,
                         event.steps_done)
            self._test = event.test
            self._write_summary()
        elif isinstance(event, RunFailed):
            self._finish("failed", event.layers, event.findings, event.seconds,
                         event.steps_done)
            self._error = event.error
            self._append({"type": "error", "error": event.error, "traceback": event.traceback})
            self._write_summary()

    def _finish(self, status: str, layers: list[LayerInfo], findings: list[Finding],
                seconds: float, steps: int) -> None:
        self._status = status
        self._layers = layers or self._layers
        self._findings = findings
        self._seconds = seconds
        self._steps = steps

    def mark_interrupted(self, findings: list[Finding] | None = None) -> None:
        """For a stream cut short outside the trainer (e.g. a second Ctrl-C)."""
        if self._status == "running":
            self._status = "interrupted"
            if findings is not None:
                self._findings = findings
            self._write_summary()

    def _append(self, obj: dict[str, Any]) -> None:
        self._metrics.write(_dump(obj) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.mark_interrupted()
        self._metrics.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def status(self) -> str:
        return self._status

    @property
    def findings(self) -> list[Finding]:
        return list(self._findings)

    def summary(self) -> dict[str, Any]:
        return build_summary(
            name=self.name,
            status=self._status,
            layers=self._layers,
            first=self._first,
            last=self._last,
            epochs=self._epochs,
            test=self._test,
            findings=self._findings,
            seconds=self._seconds,
            steps=self._steps,
            error=self._error,
            num_classes=self.num_classes,
        )

    def _write_summary(self, durable: bool = True) -> None:
        write_json_atomic(self.path / SUMMARY_FILE, self.summary(), durable=durable)
        self._summary_at = time.monotonic()


def build_summary(
    *,
    name: str,
    status: str,
    layers: list[LayerInfo],
    first: StepRecord | None,
    last: StepRecord | None,
    epochs: list[EpochRecord],
    test: dict[str, float] | None,
    findings: list[Finding],
    seconds: float,
    steps: int,
    error: str | None = None,
    num_classes: int = 0,
) -> dict[str, Any]:
    """summary.json's content (its schema is documented in the README)."""

    def stat(record: StepRecord | None, layer: str, key: str) -> float | None:
        if record is None or layer not in record.layers:
            return None
        value = float(getattr(record.layers[layer], key))
        return None if math.isnan(value) else value

    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "status": status,
        "error": error,
        "num_classes": num_classes,
        "seconds": seconds,
        "steps": steps,
        "layers": [
            {
                **info.to_json(),
                "grad_norm_first": stat(first, info.name, "grad_norm"),
                "grad_norm_last": stat(last, info.name, "grad_norm"),
                "update_ratio_last": stat(last, info.name, "update_ratio"),
                "weight_change_last": stat(last, info.name, "weight_change"),
                "act_saturated_last": stat(last, info.name, "act_saturated"),
                "act_dead_last": stat(last, info.name, "act_dead"),
            }
            for info in sorted(layers, key=lambda i: i.depth)
        ],
        "blocks": jsonable(block_summary(first, last, layers)),
        "time_grad": jsonable(last.time_grad) if last is not None else {},
        "epochs": [{k: v for k, v in e.to_json().items() if k != "type"} for e in epochs],
        "test": test,
        "findings": [f.to_json() for f in findings],
        "verdict": verdict(findings),
    }


# ----- reading ---------------------------------------------------------------------


@dataclass
class RunData:
    """A run folder read back: what `report`, `view` and `compare` work from."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    records: list[StepRecord]
    epochs: list[EpochRecord]
    layers: list[LayerInfo]
    findings: list[Finding]
    status: str  # completed | interrupted | failed | cut off
    notes: list[str] = field(default_factory=list)  # what the reader had to skip or guess

    @property
    def name(self) -> str:
        return str(self.summary.get("name") or self.path.name)


def read_run(path: Path) -> RunData:
    """Read a run folder, tolerating a truncated last line; UserError when unusable."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: give the run folder written by `vgdiag run`")
    summary_path = path / SUMMARY_FILE
    metrics_path = path / METRICS_FILE
    if not summary_path.exists() and not metrics_path.exists():
        raise UserError(f"{path} is not a vgdiag run folder (no {SUMMARY_FILE} or {METRICS_FILE})")
    notes: list[str] = []
    summary = _read_json(summary_path, notes) if summary_path.exists() else {}
    if not isinstance(summary, dict):
        raise UserError(f"{summary_path} is not a vgdiag summary (expected a JSON object)")
    version = summary.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int):
        raise UserError(f"{summary_path} is not a vgdiag summary (bad schema_version)")
    if version > SCHEMA_VERSION:
        raise UserError(
            f"{path} was written by a newer vgdiag (schema {version}, this one reads "
            f"{SCHEMA_VERSION}): upgrade vgdiag to read it"
        )
    config = _read_json(path / CONFIG_FILE, notes) if (path / CONFIG_FILE).exists() else {}
    records, epochs = _read_metrics(metrics_path, notes) if metrics_path.exists() else ([], [])
    layers = [LayerInfo.from_json(d) for d in summary.get("layers", []) if "name" in d]
    if not layers and records:
        layers = [
            LayerInfo(name=n, kind="", depth=i, num_params=0, param_names=())
            for i, n in enumerate(records[-1].layers)
        ]
    if not epochs and summary.get("epochs"):
        epochs = [EpochRecord.from_json(e) for e in summary["epochs"]]
    findings = [Finding.from_json(f) for f in summary.get("findings", [])]
    status = str(summary.get("status", "running"))
    if status == "running":
        status = "cut off"
        notes.append("the run was cut off: its process ended without finishing the folder")
        if records:
            # The summary is from the last finished epoch (or the start): the metrics
            # written after it may show more, so the diagnosis is made again from them.
            findings = diagnose(records, layers, epochs, int(summary.get("num_classes") or 0))
            notes.append("findings were recomputed from the metrics the run wrote")
    return RunData(path, config if isinstance(config, dict) else {}, summary, records, epochs,
                   layers, findings, status, notes)


def _read_json(path: Path, notes: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is corrupt or not JSON ({exc}): it cannot be read") from None


def _read_metrics(path: Path, notes: list[str]) -> tuple[list[StepRecord], list[EpochRecord]]:
    records: list[StepRecord] = []
    epochs: list[EpochRecord] = []
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
                records.append(StepRecord.from_json(obj))
            elif kind == "epoch":
                epochs.append(EpochRecord.from_json(obj))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            bad += 1
    if bad:
        notes.append(f"skipped {bad} incomplete or corrupt line(s) in {METRICS_FILE}")
    if lines and not records and not epochs and bad:
        raise UserError(f"{path} holds no readable vgdiag metrics: is this a vgdiag run folder?")
    return records, epochs
