"""A run folder read back: a tolerant, type-checking reader that replays the folder.

    run = read_run(path)   # what `report`, `view` and `compare` work from

A truncated last line of metrics.jsonl (a killed run) is skipped with a note; a field
of summary.json that is not what vgdiag writes is one clear UserError naming it, one it
lacks (an older or partial writer) reads as not written. A folder without summary.json
(a run killed before it first wrote one, or the file deleted) is read from config.json
and metrics.jsonl as a cut-off run. The
folder's events are folded by the same `RunSummary` that wrote it, so a saved run's
state is the one a live consumer held.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgdiag.engine import events as ev
from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.records import SEVERITIES, EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.status import WRITTEN_STATUSES, RunStatus
from vgdiag.engine.summary import SCHEMA_VERSION, RunSummary
from vgdiag.errors import UserError
from vgdiag.runs.folder import (
    COMPARE_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    pid_alive,
    writer_gone,
)

# The notes that say a "running" folder's status: a report's status line says it too.
RUNNING_NOTE = "the run is still being written: this is how it stands now"
CUT_OFF_NOTE = "the run was cut off: its process ended without finishing the folder"
STATUS_NOTES = (RUNNING_NOTE, CUT_OFF_NOTE)


@dataclass
class RunData:
    """A run folder read back: what `report`, `view` and `compare` work from."""

    path: Path
    config: dict[str, Any]
    # summary.json, its known fields checked for type; for a run that did not end, its
    # steps and seconds brought up to what metrics.jsonl shows (see `progress`)
    summary: dict[str, Any]
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
    config_path = path / CONFIG_FILE
    metrics_path = path / METRICS_FILE
    notes: list[str] = []
    raw = _read_json(summary_path) if summary_path.exists() else {}
    summary, parsed = _checked_summary(raw, summary_path)
    config = _read_json(config_path) if config_path.exists() else {}
    if not isinstance(config, dict):
        raise UserError(f"{config_path} is corrupt: expected a JSON object")
    lines = _read_metrics(metrics_path, notes) if metrics_path.exists() else []
    if not summary_path.exists():
        # No summary: a "running" one that never came, so the run reads as cut off.
        _without_summary(path, config_path.exists(), metrics_path.exists(), lines, notes)
    _from_config(summary, raw, config)
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
        if _writer_alive(raw):
            notes.append(RUNNING_NOTE)
        else:
            status = RunStatus.CUT_OFF
            notes.append(CUT_OFF_NOTE)
        # summary.json is rewritten only every few seconds: metrics.jsonl is newer.
        summary["steps"], summary["seconds"] = progress(summary, parsed["epochs"], records,
                                                        epochs)
        if records or status == RunStatus.CUT_OFF:
            # The summary is from the last finished epoch (or the start): the metrics
            # written after it may show more, so the diagnosis is made again from them.
            # A run cut off before its first sampled step is `not measured` (an error a
            # CI gate fails), not healthy.
            findings = diagnose(records, layers, epochs, summary["num_classes"],
                                exclude=summary.get("not_applicable") or ())
            if records:
                notes.append("findings were recomputed from the metrics the run wrote")
    state.findings = list(findings)
    if status == RunStatus.FAILED:
        state.apply(ev.RunFailed(error=summary["error"] or "", traceback=state.traceback or "",
                              layers=layers, findings=findings, seconds=summary["seconds"],
                              steps_done=summary["steps"]))
    elif status.final:
        state.apply(ev.RunFinished(status=status, layers=layers, test=summary["test"],
                                findings=findings, seconds=summary["seconds"],
                                steps_done=summary["steps"]))
        state.status = status
    else:
        state.layers = layers or state.layers
        state.seconds = summary["seconds"] or state.seconds
        state.steps = max(state.steps, summary["steps"])
    summary["verdict"] = state.verdict
    return RunData(path, config, summary, records, epochs, layers, findings, status, notes, state)


def latest_steps(summary: dict[str, Any], epochs: list[EpochRecord],
                 records: list[StepRecord]) -> int:
    """The most of summary.json's steps, the last epoch record's and the last sampled
    step's + 1."""
    steps = int(summary.get("steps") or 0)
    return max([steps, *(e.steps for e in epochs[-1:]), *(r.step + 1 for r in records[-1:])])


def progress(summary: dict[str, Any], summary_epochs: list[EpochRecord],
             records: list[StepRecord], epochs: list[EpochRecord]) -> tuple[int, float]:
    """Steps done and seconds trained, from whichever of summary.json and the metrics is
    later: a run rewrites its summary at an epoch's end at most every few seconds (the
    store's SUMMARY_INTERVAL_S), so a killed run's lags its metrics.jsonl.

    Steps: the most of the summary's, the last epoch record's and the last sampled
    step's + 1. Seconds: the summary's, plus the wall time of each epoch it was written
    before (an epoch record holds its own time, not the time since the start).
    """
    steps = latest_steps(summary, epochs, records)
    seconds = float(summary.get("seconds") or 0.0)
    known = max((e.epoch for e in summary_epochs), default=0)
    seconds += sum(e.seconds for e in epochs if e.epoch > known and math.isfinite(e.seconds))
    return steps, seconds


def replay_folder(path: Path) -> RunSummary:
    """The fold of a saved run's events: the same state a live consumer would hold."""
    return read_run(path).state


def _events(lines: list[Any], layers: list[LayerInfo],
            epochs: list[EpochRecord]) -> list[ev.Event]:
    events: list[ev.Event] = []
    by_epoch = {e.epoch: e for e in epochs}
    for item in lines:
        if isinstance(item, StepRecord):
            events.append(ev.StepSampled(item, layers, item.step + 1, 0.0))
        elif isinstance(item, EpochRecord) and by_epoch.get(item.epoch) is item:
            events.append(ev.EpochEnded(item, []))
        elif isinstance(item, ev.StageStarted):
            events.append(item)
    for epoch in epochs:  # those only the summary had
        if not any(isinstance(x, EpochRecord) and x.epoch == epoch.epoch for x in lines):
            events.append(ev.EpochEnded(epoch, []))
    return events


def _without_summary(path: Path, has_config: bool, has_metrics: bool, lines: list[Any],
                     notes: list[str]) -> None:
    """The note for a folder without summary.json; UserError when config.json and the
    metrics are missing too, since then nothing says what the run was or did."""
    if has_config or lines:
        read = [name for name, there in ((CONFIG_FILE, has_config), (METRICS_FILE, bool(lines)))
                if there]
        notes.append(f"{SUMMARY_FILE} is missing: the run was read from {' and '.join(read)}")
        return
    if (path / COMPARE_FILE).is_file():
        variants = sorted(p.name for p in path.iterdir() if (p / SUMMARY_FILE).is_file())
        example = next((v for v in variants if v.startswith("baseline")),
                       variants[0] if variants else "baseline")
        shown = ", ".join(variants[:6]) + (", ..." if len(variants) > 6 else "")
        raise UserError(
            f"{path} is a compare folder, not a run: its table is {path / 'compare.md'} "
            f"(and compare.html); each variant is a run folder in it "
            f"({shown or 'none written yet'}), e.g. vgdiag report {path / example}")
    metrics = f"no records in {METRICS_FILE}" if has_metrics else f"no {METRICS_FILE}"
    raise UserError(f"{path} is not a vgdiag run folder, or its run was killed before it "
                    f"wrote anything: it has no {SUMMARY_FILE}, no {CONFIG_FILE} and {metrics}")


def _from_config(summary: dict[str, Any], raw: dict[str, Any], config: dict[str, Any]) -> None:
    """The run's name and classes where summary.json does not hold them (none, or an
    older or partial one): config.json has them as its experiment's name and its data's
    classes."""
    if raw.get("name") is None:
        name = config_value(config, "experiment", "name")
        if isinstance(name, str) and name:
            summary["name"] = name
    if raw.get("num_classes") is None:
        classes = config_value(config, "data", "num_classes")
        if isinstance(classes, int) and not isinstance(classes, bool) and classes >= 0:
            summary["num_classes"] = classes


def config_value(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]...; None where a key is missing or a level is not a dict."""
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def _writer_alive(summary: dict[str, Any]) -> bool:
    """Whether the process that wrote a "running" summary still runs, on this machine."""
    # This process reads a folder it writes itself only once its store is left
    # unclosed for good (a front end that crashed): that writer is gone.
    return writer_gone(summary, lambda pid: pid != os.getpid() and pid_alive(pid)) is False


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{path} is corrupt or not JSON ({exc}): it cannot be read") from None


def _checked_summary(raw: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """summary.json with its numbers converted, the fields the reader uses present
    (a missing one as not written: 0, None or empty), and its layers, epochs and findings
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
        out["error"] = raw.get("error")
        if not isinstance(out["error"], (str, type(None))):
            raise TypeError(f"expected a string, got {_short(raw['error'])}")
        key = "test"
        test = out["test"] = raw.get("test")
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
                items.append(ev.StageStarted(int(obj["index"]), str(obj["name"]),
                                          int(obj["epochs"]), list(obj.get("trainable", []))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
                RecursionError):
            bad += 1
    if bad:
        notes.append(f"skipped {bad} incomplete or corrupt line(s) in {METRICS_FILE}")
    if lines and not items and bad:
        raise UserError(f"{path} holds no readable vgdiag metrics: is this a vgdiag run folder?")
    return items
