"""What the dashboard knows about one run: fed by events, read as immutable snapshots.

The run's own state (status, verdict, epochs, findings, layers...) is the one fold
of the event stream, `vgdiag.engine.summary.RunSummary`, the same the store and the
headless front end keep. This module adds only what the dashboard draws from and
the run does not know: the sampled steps kept for the charts, the histograms at
initialisation and now, the steps/s window, pausing, and findings estimated before
the first epoch ends.

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from vgdiag.engine import events as ev
from vgdiag.engine import gradflow
from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.history import History
from vgdiag.engine.records import EpochRecord, Finding, Histogram, LayerInfo, StepRecord
from vgdiag.engine.status import FINAL_STATUSES, RunStatus
from vgdiag.engine.summary import RunSummary
from vgdiag.runs.reader import RunData

# A few hundred columns is more than any terminal is wide; older samples are
# decimated (the first, at initialisation, is always kept).
MAX_RECORDS = 1024
THROUGHPUT_WINDOW_S = 5.0  # steps/s over the last few seconds: responsive, not jumpy
# Findings come with every epoch; before the first one ends (long epochs) they are
# recomputed from the samples at most this often, off the UI thread.
LIVE_DIAGNOSIS_INTERVAL_S = 3.0


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
    """One run as the dashboard holds it, safe to feed from one thread and read from another.

    Args:
        name: the run's name until its RunStarted names it.
        num_classes: 0 for regression (or unknown until the RunStarted says).
        clock: paces the live diagnosis (tests pass their own).
        live_diagnosis: estimate findings before the first epoch ends.
    """

    def __init__(
        self, name: str = "", num_classes: int = 0, *,
        clock: Callable[[], float] = time.monotonic,
        live_diagnosis: bool = True,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._live_diagnosis = live_diagnosis  # off for a replay: its findings are known
        self._run = RunSummary(name=name, num_classes=num_classes)
        self._started = False  # a RunStarted came: "starting" until then
        self._paused = False
        self._stopping = False
        self._history = History(MAX_RECORDS)
        self._weight_hists: dict[str, LayerHistograms] = {}
        self._grad_hists: dict[str, LayerHistograms] = {}
        self._live_findings: list[Finding] = []  # estimated before the first epoch ends
        self._rate_window: deque[tuple[float, int]] = deque()
        self._last_diagnosis = -math.inf
        self._path = ""
        self._following = ""

    @classmethod
    def saved(cls, run: RunData) -> RunState:
        """The state of a run folder read back: its fold (`run.state`) and its samples."""
        state = cls(live_diagnosis=False)
        state._run = run.state
        state._started = True
        state._path = str(run.path)
        for record in run.records:
            state._sampled(record)
        return state

    # -- writing (the worker thread) ----------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Fold one event into the run, and keep what the charts draw."""
        with self._lock:
            run = self._run
            if run.finished:
                return
            run.apply(event)
            if isinstance(event, ev.RunStarted):
                self._started = True
            elif isinstance(event, ev.StepSampled):
                self._sampled(event.record)
                self._progress(event.steps_done, event.seconds)
                if self._live_diagnosis and not run.epochs and self._due_for_diagnosis():
                    self._live_findings = diagnose(self._history.records(), run.layers, (),
                                                   self._num_classes())
            elif isinstance(event, ev.StepProgress):
                self._progress(event.steps_done, event.seconds)
            elif isinstance(event, ev.EpochEnded):
                self._last_diagnosis = self._clock()

    def _sampled(self, record: StepRecord) -> None:
        self._history.append(record)
        self._weight_hists = merge_histograms(self._weight_hists, record.weight_hist, record.step)
        self._grad_hists = merge_histograms(self._grad_hists, record.grad_hist, record.step)

    def _num_classes(self) -> int:
        # A followed folder's reader learns it from the config the RunStarted carries.
        data = self._run.config.get("data", {}) or {}
        return self._run.num_classes or int(data.get("num_classes", 0) or 0)

    def _due_for_diagnosis(self) -> bool:
        now = self._clock()
        if now - self._last_diagnosis < LIVE_DIAGNOSIS_INTERVAL_S:
            return False
        self._last_diagnosis = now
        return True

    def _progress(self, steps: int, seconds: float) -> None:
        window = self._rate_window
        if window and window[-1][0] >= seconds:
            # Samples of one instant (a followed folder's backlog, read at once) count
            # once, as the latest: a rate needs time between its ends.
            window[-1] = (window[-1][0], steps)
            return
        window.append((seconds, steps))
        while len(window) > 2 and seconds - window[0][0] > THROUGHPUT_WINDOW_S:
            window.popleft()

    def set_paused(self, paused: bool) -> None:
        """Mark the run paused (the worker blocks) or running again."""
        with self._lock:
            self._paused = paused
            # The steps/s window must not count the time spent paused.
            self._rate_window.clear()

    def set_stopping(self) -> None:
        """The user asked to stop: the run finishes its folder, then ends."""
        with self._lock:
            if not self._run.finished:
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
            run = self._run
            status = run.status
            if not run.finished:
                status = (RunStatus.STOPPING if self._stopping else
                          RunStatus.PAUSED if self._paused else
                          RunStatus.RUNNING if self._started else RunStatus.STARTING)
            estimated = self._live_diagnosis and not run.epochs and not run.finished
            experiment = run.config.get("experiment", {}) or {}
            data = run.config.get("data", {}) or {}
            return RunView(
                name=str(experiment.get("name") or run.name),
                model=str(experiment.get("model", "")),
                dataset=str(data.get("name", "")),
                device=str(run.config.get("device", "")),
                status=str(status),
                layers=tuple(sorted(run.layers, key=lambda i: i.depth)),
                records=tuple(self._history),
                epochs=tuple(run.epochs),
                findings=tuple(self._live_findings if estimated else run.findings),
                weight_hists=self._weight_hists,
                grad_hists=self._grad_hists,
                epoch=run.epoch,
                total_epochs=run.total_epochs,
                steps_done=run.steps,
                total_steps=run.steps_per_epoch * run.total_epochs,
                seconds=run.seconds,
                steps_per_second=self._rate(),
                stage=run.stage,
                test=run.test,
                error=run.error,
                traceback=run.traceback,
                num_classes=self._num_classes(),
                plugins=tuple(experiment.get("plugins", ()) or ()),
                path=self._path,
                following=self._following,
            )

    def _rate(self) -> float:
        if len(self._rate_window) < 2:
            return math.nan
        (t0, s0), (t1, s1) = self._rate_window[0], self._rate_window[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else math.nan


def planned_epochs(config: dict[str, Any]) -> tuple[int, int]:
    """(steps per epoch, epochs over all stages) as a run's config.json plans them."""
    stages = config.get("stages", []) or []
    return (int(config.get("steps_per_epoch", 0) or 0),
            sum(int(s.get("epochs", 0) or 0) for s in stages if isinstance(s, dict)))


def view_from_run(run: RunData) -> RunView:
    """The snapshot of a saved run folder (what `vgdiag view` shows)."""
    view = RunState.saved(run).view()
    per_epoch, planned = planned_epochs(run.config)
    last_epoch = run.epochs[-1].epoch if run.epochs else 0
    return replace(view, name=run.name, epoch=last_epoch, total_epochs=planned or last_epoch,
                   total_steps=per_epoch * planned, steps_per_second=math.nan,
                   notes=tuple(run.notes), live=False)


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
