"""The one fold of the event stream: what a run is, so far, and how it ended.

Every consumer of the trainer's events that needs the run's state (the run store,
the headless front end, the dashboard) feeds the same `RunSummary`, so a status,
a verdict or "the last sampled step" is decided in one place. A saved run read back
(`vgdiag.runs.reader.replay_folder`) is this fold over the folder's events.

    summary = RunSummary(name, num_classes)
    for event in run_training(...):
        summary.apply(event)
    summary.status, summary.verdict, summary.to_json()   # summary.json's content

Not thread-safe by itself: a front end that reads it from another thread holds its
own lock around `apply` and its reads (the dashboard does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vgdiag.engine import events as ev
from vgdiag.engine.diagnosis import verdict as findings_verdict
from vgdiag.engine.gradflow import block_summary
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord, jsonable
from vgdiag.engine.status import RunStatus

SCHEMA_VERSION = 1  # summary.json's schema_version; readers refuse newer ones
FAILED_PREFIX = "failed: "  # the verdict of a failed run: "failed: <one line>"


def one_line(text: str) -> str:
    """The first non-empty line of `text`, whitespace collapsed."""
    for line in str(text).splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


NOT_DIAGNOSED = "running: not diagnosed yet"


def run_verdict(status: str, error: str | None, findings: Sequence[Finding],
                diagnosed: bool = True) -> str:
    """The verdict of a run: "failed: <one line>" for a failed run, else the findings'.

    A run that failed is never called healthy: what it measured before failing says
    nothing about whether the model can train.
    """
    if status == RunStatus.FAILED:
        return FAILED_PREFIX + (one_line(error or "") or "training raised an error")
    if status == RunStatus.RUNNING and not diagnosed:
        # No diagnosis yet (before the first epoch's end): a reader of summary.json must
        # not see "healthy" for a run nothing has been said about, killed there or not.
        return NOT_DIAGNOSED
    return findings_verdict(findings)


@dataclass
class RunSummary:
    """The accumulated state of one run, built by `apply`-ing its events in order.

    Attributes are read freely and written only through the methods.
    """

    name: str = ""  # the run's name (summary.json `name`)
    num_classes: int = 0  # 0 for regression
    config: dict[str, Any] = field(default_factory=dict)  # RunStarted.config (config.json)
    status: RunStatus = RunStatus.RUNNING
    layers: list[LayerInfo] = field(default_factory=list)  # as the trainer lists them
    first: StepRecord | None = None  # the first sampled step (at initialisation)
    last: StepRecord | None = None  # the latest sampled step
    epochs: list[EpochRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # latest diagnosis
    test: dict[str, float] | None = None  # {"loss", "acc"} after a completed run
    error: str | None = None  # the one-line failure of a failed run
    traceback: str | None = None  # its traceback, when known
    seconds: float = 0.0  # wall time of training so far
    steps: int = 0  # optimizer steps done so far
    stage: str = ""  # name of the stage in progress
    epoch: int = 0  # epoch in progress (or the last one finished), 1-based; 0 before
    total_epochs: int = 0  # over all stages
    steps_per_epoch: int = 0  # of the first stage
    extra: dict[str, Any] = field(default_factory=dict)  # RunFinished.extra
    not_applicable: list[str] = field(default_factory=list)  # EpochEnded's: not advised

    # -- the fold -------------------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Fold one event in. Events after the run ended are ignored."""
        if self.status.final:
            return
        if isinstance(event, ev.RunStarted):
            self.config = dict(event.config)
            self.steps_per_epoch = event.steps_per_epoch
            self.total_epochs = event.total_epochs
            self.epoch = max(self.epoch, 1)
        elif isinstance(event, ev.StageStarted):
            self.stage = event.name
        elif isinstance(event, ev.StepSampled):
            self.first = self.first or event.record
            self.last = event.record
            self.layers = list(event.layers)
            self.epoch = max(self.epoch, event.record.epoch)
            self.steps = event.steps_done
            self.seconds = event.seconds
        elif isinstance(event, ev.StepProgress):
            self.epoch = max(self.epoch, event.epoch)
            self.steps = event.steps_done
            self.seconds = event.seconds
        elif isinstance(event, ev.EpochEnded):
            self.epochs.append(event.record)
            self.findings = list(event.findings)
            self.not_applicable = list(event.not_applicable)
            self.steps = max(self.steps, event.record.steps)
            if event.record.epoch < self.total_epochs:
                self.epoch = event.record.epoch + 1
        elif isinstance(event, ev.RunFinished):
            self._end(RunStatus(event.status), event.layers, event.findings, event.seconds,
                      event.steps_done)
            self.test = event.test
            self.extra = dict(event.extra)
        elif isinstance(event, ev.RunFailed):
            self._end(RunStatus.FAILED, event.layers, event.findings, event.seconds,
                      event.steps_done)
            self.error = one_line(event.error) or "training raised an error"
            self.traceback = event.traceback or None

    def _end(self, status: RunStatus, layers: list[LayerInfo], findings: list[Finding],
             seconds: float, steps: int) -> None:
        self.status = status
        self.layers = list(layers) or self.layers
        self.findings = list(findings)
        self.seconds = seconds or self.seconds
        self.steps = max(steps, self.steps)

    def failure(self, error: str, traceback: str = "") -> ev.RunFailed:
        """The RunFailed event that ends this run from outside the stream (the disk, a
        front end's own error), with what is known so far; `apply` it to every sink."""
        return ev.RunFailed(error=one_line(error) or "the run failed", traceback=traceback,
                         layers=list(self.layers), findings=list(self.findings),
                         seconds=self.seconds, steps_done=self.steps)

    def fail(self, error: str, traceback: str = "") -> ev.RunFailed:
        """End the run as failed, even one that had ended: a run whose folder could
        not record its end did not end well. Returns the event for the other sinks."""
        event = self.failure(error, traceback)
        if self.status.final:
            self.status = RunStatus.FAILED
            self.error = event.error
            self.traceback = traceback or None
        else:
            self.apply(event)
        return event

    def interrupt(self, findings: Sequence[Finding] | None = None) -> bool:
        """End a run still in progress as interrupted (a stream cut short by the user).

        Returns False when the run had already ended (its status stands).
        """
        if self.status.final:
            return False
        self.status = RunStatus.INTERRUPTED
        if findings is not None:
            self.findings = list(findings)
        return True

    @classmethod
    def replay(cls, events: Iterable[ev.Event], name: str = "", num_classes: int = 0) -> RunSummary:
        """The fold of a whole stream."""
        summary = cls(name=name, num_classes=num_classes)
        for event in events:
            summary.apply(event)
        return summary

    # -- reading --------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status.final

    @property
    def verdict(self) -> str:
        return run_verdict(self.status, self.error, self.findings,
                           diagnosed=bool(self.epochs or self.findings))

    def to_json(self) -> dict[str, Any]:
        """summary.json's content (its schema is documented in the README)."""
        return summary_json(
            name=self.name, status=self.status, layers=self.layers, first=self.first,
            last=self.last, epochs=self.epochs, test=self.test, findings=self.findings,
            seconds=self.seconds, steps=self.steps, error=self.error,
            num_classes=self.num_classes, not_applicable=self.not_applicable,
        )


def summary_json(
    *,
    name: str,
    status: str,
    layers: Sequence[LayerInfo],
    first: StepRecord | None,
    last: StepRecord | None,
    epochs: Sequence[EpochRecord],
    test: dict[str, float] | None,
    findings: Sequence[Finding],
    seconds: float,
    steps: int,
    error: str | None = None,
    num_classes: int = 0,
    not_applicable: Sequence[str] = (),
) -> dict[str, Any]:
    """summary.json's content from its parts (also used for the JSON report)."""

    def stat(record: StepRecord | None, layer: str, key: str) -> float | None:
        if record is None or layer not in record.layers:
            return None
        value = float(getattr(record.layers[layer], key))
        return None if math.isnan(value) else value

    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "status": str(status),
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
        "blocks": jsonable(block_summary(first, last, list(layers))),
        "time_grad": jsonable(last.time_grad) if last is not None else {},
        "epochs": [{k: v for k, v in e.to_json().items() if k != "type"} for e in epochs],
        "test": test,
        "findings": [f.to_json() for f in findings],
        "not_applicable": list(not_applicable),  # plugins left out of the advice
        "verdict": run_verdict(status, error, findings, diagnosed=bool(epochs or findings)),
    }
