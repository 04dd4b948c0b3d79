"""What the dashboard knows about one run: fed by events, read as immutable snapshots.

A training worker thread writes (`RunState.apply`), the UI thread reads
(`RunState.view`); a lock keeps the two apart and every view is a fresh, frozen
object, so the UI can hold one as long as it likes. No Textual here: this module
is plain data and is tested without a terminal.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from vgdiag.engine import gradflow
from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFailed,
    RunFinished,
    RunStarted,
    StageStarted,
    StepProgress,
    StepSampled,
)
from vgdiag.engine.history import History
from vgdiag.engine.records import EpochRecord, Finding, Histogram, LayerInfo, StepRecord
from vgdiag.runs.reader import RunData

# A few hundred columns is more than any terminal is wide; older samples are
# decimated (the first, at initialisation, is always kept).
MAX_RECORDS = 1024
THROUGHPUT_WINDOW_S = 5.0  # steps/s over the last few seconds: responsive, not jumpy
# Findings come with every epoch; before the first one ends (long epochs) they are
# recomputed from the samples at most this often, off the UI thread.
LIVE_DIAGNOSIS_INTERVAL_S = 3.0

FINAL_STATUSES = ("completed", "interrupted", "failed", "cut off")


@dataclass(frozen=True)
class LayerHistograms:
    """One layer's histograms at initialisation (first seen) and now (latest)."""

    init_step: int
    init: Histogram
    now_step: int
    now: Histogram


@dataclass(frozen=True, eq=False)
class RunView:
    """An immutable snapshot of one run, everything the screens draw.

    Compared by identity: a new snapshot is a change.
    """

    name: str  # the run's name (experiment or folder)
    model: str  # how the model was specified
    dataset: str
    device: str
    # starting | running | paused | stopping | completed | interrupted | failed | cut off
    status: str
    layers: tuple[LayerInfo, ...] = ()  # depth order
    records: tuple[StepRecord, ...] = ()  # sampled steps, bounded; the first is at init
    epochs: tuple[EpochRecord, ...] = ()
    findings: tuple[Finding, ...] = ()
    weight_hists: dict[str, LayerHistograms] = field(default_factory=dict)
    grad_hists: dict[str, LayerHistograms] = field(default_factory=dict)
    epoch: int = 0  # epoch in progress (or last finished), 1-based
    total_epochs: int = 0
    steps_done: int = 0
    total_steps: int = 0  # estimate: steps per epoch of the first stage x all epochs
    seconds: float = 0.0  # wall time of the run so far
    steps_per_second: float = math.nan
    stage: str = ""
    test: dict[str, float] | None = None
    error: str | None = None
    traceback: str | None = None
    num_classes: int = 0
    plugins: tuple[str, ...] = ()  # mitigations applied to this run's recipe
    path: str = ""  # the run folder
    notes: tuple[str, ...] = ()  # what the reader of a saved run had to skip
    live: bool = True  # False for a saved run read back
    following: str = ""  # for a folder another process writes: how that writer is doing

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def seconds_left(self) -> float:
        """Estimated seconds to the end of training (NaN when unknown)."""
        if self.finished or not self.total_steps:
            return 0.0 if self.finished else math.nan
        rate = self.steps_per_second
        if not math.isfinite(rate) or rate <= 0:
            return math.nan
        return max(self.total_steps - self.steps_done, 0) / rate

    @property
    def last(self) -> StepRecord | None:
        return self.records[-1] if self.records else None

    @property
    def first(self) -> StepRecord | None:
        return self.records[0] if self.records else None

    def layer(self, name: str) -> LayerInfo | None:
        for info in self.layers:
            if info.name == name:
                return info
        return None


class RunState:
    """The accumulated state of one run, safe to feed from one thread and read from another."""

    def __init__(
        self, name: str = "", num_classes: int = 0, *,
        clock: Callable[[], float] = time.monotonic,
        live_diagnosis: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._live_diagnosis = live_diagnosis  # off for a replay: its findings are known
        self._name = name
        self._num_classes = num_classes
        self._config: dict[str, Any] = {}
        self._status = "starting"
        self._paused = False
        self._stopping = False
        self._layers: list[LayerInfo] = []
        self._history = History(MAX_RECORDS)
        self._epochs: list[EpochRecord] = []
        self._findings: list[Finding] = []
        self._weight_hists: dict[str, LayerHistograms] = {}
        self._grad_hists: dict[str, LayerHistograms] = {}
        self._epoch = 0
        self._total_epochs = 0
        self._steps_per_epoch = 0
        self._steps = 0
        self._seconds = 0.0
        self._stage = ""
        self._test: dict[str, float] | None = None
        self._error: str | None = None
        self._traceback: str | None = None
        self._rate_window: deque[tuple[float, int]] = deque()
        self._last_diagnosis = -math.inf
        self._path = ""
        self._following = ""

    # -- writing (the worker thread) ----------------------------------------------------

    def apply(self, event: Event) -> None:
        """Fold one event into the state."""
        with self._lock:
            self._apply(event)

    def _apply(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._config = dict(event.config)
            data = self._config.get("data", {}) or {}
            self._num_classes = self._num_classes or int(data.get("num_classes", 0) or 0)
            self._steps_per_epoch = event.steps_per_epoch
            self._total_epochs = event.total_epochs
            self._status = "running"
            self._epoch = 1
        elif isinstance(event, StageStarted):
            self._stage = event.name
        elif isinstance(event, StepSampled):
            record = event.record
            self._history.append(record)
            self._layers = list(event.layers)
            self._epoch = max(self._epoch, record.epoch)
            self._keep_histograms(record)
            self._progress(event.steps_done, event.seconds)
            if self._live_diagnosis and not self._epochs and self._due_for_diagnosis():
                self._findings = diagnose(
                    self._history.records(), self._layers, (), self._num_classes
                )
        elif isinstance(event, StepProgress):
            self._epoch = max(self._epoch, event.epoch)
            self._progress(event.steps_done, event.seconds)
        elif isinstance(event, EpochEnded):
            self._epochs.append(event.record)
            self._findings = list(event.findings)
            self._last_diagnosis = self._clock()
            self._steps = max(self._steps, event.record.steps)
            if event.record.epoch < self._total_epochs:
                self._epoch = event.record.epoch + 1
        elif isinstance(event, RunFinished):
            self._status = event.status
            self._finish(event.layers, event.findings, event.seconds, event.steps_done)
            self._test = event.test
        elif isinstance(event, RunFailed):
            self._status = "failed"
            self._finish(event.layers, event.findings, event.seconds, event.steps_done)
            self._error = event.error
            self._traceback = event.traceback

    def _finish(self, layers: list[LayerInfo], findings: list[Finding], seconds: float,
                steps: int) -> None:
        self._layers = list(layers) or self._layers
        self._findings = list(findings)
        self._seconds = seconds
        self._steps = steps
        self._paused = False
        self._stopping = False

    def _due_for_diagnosis(self) -> bool:
        now = self._clock()
        if now - self._last_diagnosis < LIVE_DIAGNOSIS_INTERVAL_S:
            return False
        self._last_diagnosis = now
        return True

    def _progress(self, steps: int, seconds: float) -> None:
        self._steps = steps
        self._seconds = seconds
        window = self._rate_window
        if window and window[-1][0] >= seconds:
            # Samples of one instant (a followed folder's backlog, read at once) count
            # once, as the latest: a rate needs time between its ends.
            window[-1] = (window[-1][0], steps)
            return
        window.append((seconds, steps))
        while len(window) > 2 and seconds - window[0][0] > THROUGHPUT_WINDOW_S:
            window.popleft()

    def _keep_histograms(self, record: StepRecord) -> None:
        self._weight_hists = merge_histograms(self._weight_hists, record.weight_hist, record.step)
        self._grad_hists = merge_histograms(self._grad_hists, record.grad_hist, record.step)

    def set_paused(self, paused: bool) -> None:
        """Mark the run paused (the worker blocks) or running again."""
        with self._lock:
            self._paused = paused
            # The steps/s window must not count the time spent paused.
            self._rate_window.clear()

    def set_stopping(self) -> None:
        """The user asked to stop: the run finishes its folder, then ends."""
        with self._lock:
            if self._status not in FINAL_STATUSES:
                self._stopping = True

    def set_path(self, path: str) -> None:
        with self._lock:
            self._path = path

    def set_following(self, detail: str) -> None:
        """How the process writing a followed folder is doing (one line)."""
        with self._lock:
            self._following = detail

    # -- reading (the UI thread) ----------------------------------------------------------

    def view(self) -> RunView:
        """A frozen snapshot of everything known now."""
        with self._lock:
            status = self._status
            if status not in FINAL_STATUSES:
                if self._stopping:
                    status = "stopping"
                elif self._paused:
                    status = "paused"
            experiment = self._config.get("experiment", {}) or {}
            data = self._config.get("data", {}) or {}
            return RunView(
                name=str(experiment.get("name") or self._name),
                model=str(experiment.get("model", "")),
                dataset=str(data.get("name", "")),
                device=str(self._config.get("device", "")),
                status=status,
                layers=tuple(sorted(self._layers, key=lambda i: i.depth)),
                records=tuple(self._history),
                epochs=tuple(self._epochs),
                findings=tuple(self._findings),
                weight_hists=self._weight_hists,
                grad_hists=self._grad_hists,
                epoch=self._epoch,
                total_epochs=self._total_epochs,
                steps_done=self._steps,
                total_steps=self._steps_per_epoch * self._total_epochs,
                seconds=self._seconds,
                steps_per_second=self._rate(),
                stage=self._stage,
                test=self._test,
                error=self._error,
                traceback=self._traceback,
                num_classes=self._num_classes,
                plugins=tuple(experiment.get("plugins", ()) or ()),
                path=self._path,
                following=self._following,
            )

    def _rate(self) -> float:
        if len(self._rate_window) < 2:
            return math.nan
        (t0, s0), (t1, s1) = self._rate_window[0], self._rate_window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else math.nan


def replay_events(run: RunData) -> Iterator[Event]:
    """A saved run folder as the event stream that wrote it (as far as the folder keeps it)."""
    config = run.config
    stages = config.get("stages", []) or []
    yield RunStarted(config, int(config.get("steps_per_epoch", 0) or 0),
                     sum(int(s.get("epochs", 0) or 0) for s in stages))
    layers = sorted(run.layers, key=lambda i: i.depth)
    epochs = iter(run.epochs)
    pending = next(epochs, None)
    stage, stage_index = "", -1

    def epoch_events(epoch: EpochRecord) -> Iterator[Event]:
        nonlocal stage, stage_index
        if epoch.stage and epoch.stage != stage:
            stage, stage_index = epoch.stage, stage_index + 1
            yield StageStarted(stage_index, stage, 0, [])
        yield EpochEnded(epoch, [])  # the findings of the end are the ones kept

    for record in run.records:
        while pending is not None and pending.steps <= record.step:
            yield from epoch_events(pending)
            pending = next(epochs, None)
        yield StepSampled(record, layers, record.step + 1, 0.0)
    while pending is not None:
        yield from epoch_events(pending)
        pending = next(epochs, None)
    summary = run.summary
    steps = int(summary.get("steps", 0) or 0) or (
        run.epochs[-1].steps if run.epochs else (run.records[-1].step + 1 if run.records else 0))
    seconds = float(summary.get("seconds", 0.0) or 0.0)
    if run.status == "failed":
        yield RunFailed(str(summary.get("error") or "training failed"), "", layers,
                        list(run.findings), seconds, steps)
    else:
        yield RunFinished(run.status, layers, summary.get("test"), list(run.findings), seconds,
                          steps)


def view_from_run(run: RunData) -> RunView:
    """The snapshot of a saved run folder (what `vgdiag view` shows): its events, folded."""
    state = RunState(run.name, int(run.summary.get("num_classes", 0) or 0),
                     live_diagnosis=False)
    state.set_path(str(run.path))
    for event in replay_events(run):
        state.apply(event)
    view = state.view()
    last_epoch = run.epochs[-1].epoch if run.epochs else 0
    return replace(view, name=run.name, epoch=last_epoch,
                   total_epochs=view.total_epochs or last_epoch,
                   steps_per_second=math.nan, notes=tuple(run.notes), live=False)


# -- derived numbers the panels share -------------------------------------------------------


def merge_histograms(
    known: dict[str, LayerHistograms], new: dict[str, Histogram], step: int
) -> dict[str, LayerHistograms]:
    """`known` with the histograms of one record as "now" (and as "init" where first seen).

    Returns a new dict (or `known` itself when there is nothing new): snapshots
    already handed out keep the one they have.
    """
    if not new:
        return known
    updated = dict(known)
    for name, hist in new.items():
        old = updated.get(name)
        if old is None:
            updated[name] = LayerHistograms(step, hist, step, hist)
        else:
            updated[name] = LayerHistograms(old.init_step, old.init, step, hist)
    return updated


# Ratios to the output layer and their health live in the engine's gradflow; the
# dashboard's widgets import them from here.
output_grad_norm = gradflow.output_grad_norm
grad_ratios = gradflow.grad_ratios
health = gradflow.health
