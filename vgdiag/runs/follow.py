"""Follow a run folder that another process is still writing.

No UI here. `FolderFollower` turns what appears in the folder into the engine's own
events (RunStarted, StageStarted, StepSampled, EpochEnded, then RunFinished or
RunFailed) and hands each to a plain callable, so a front end folds a followed run
exactly like one it trains itself; a second callable hears how the writer is doing.

metrics.jsonl only grows and summary.json is replaced in one rename (folder.py), so
reading is safe at any moment: a half-written last line is kept back until its end
arrives. The writer is gone when summary.json says how it ended, or when it still
says "running" and the process named in it no longer exists (this machine), or,
when that cannot be asked (another machine, an older folder), when nothing has
changed for `cut_off_after_s`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vgdiag.engine import events as ev
from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.history import History
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.status import RunStatus
from vgdiag.runs.folder import CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, pid_alive, writer_gone

POLL_INTERVAL_S = 0.5  # a redraw's worth: the dashboard cannot show news faster
QUIET_AFTER_S = 15.0  # no new line for this long is worth saying (a long epoch, a stall)
# With no process to ask, a folder unchanged this long is taken as cut off: longer
# than any sane gap between two sampled steps or two summaries.
CUT_OFF_AFTER_S = 120.0
HISTORY_RECORDS = 1024  # records kept for the diagnosis of a followed run

WAITING = "waiting"  # no config or metrics yet
WRITING = "writing"  # news within QUIET_AFTER_S
QUIET = "quiet"  # still running, nothing new for a while
ENDED = "ended"  # summary.json says how the run ended
CUT_OFF = RunStatus.CUT_OFF.value  # the writer is gone without finishing the folder


@dataclass(frozen=True)
class WriterState:
    """How the process writing the folder is doing, as far as the folder tells."""

    state: str  # WAITING | WRITING | QUIET | ENDED | CUT_OFF
    quiet_for: float  # seconds since the folder last changed
    detail: str  # one line for a person

    @property
    def done(self) -> bool:
        """Nothing more will come: the run ended or its writer is gone."""
        return self.state in (ENDED, CUT_OFF)


def _ago(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


class FolderFollower:
    """Reads a run folder as it grows and replays it as engine events.

    Args:
        path: the run folder.
        on_event: called with each event, in the order the writer produced them.
        on_writer: called when the writer's state changes (and as a quiet spell grows).
        clock: monotonic seconds, for the quiet spells.
        wall: wall-clock seconds, for the run's elapsed time (from config.json's mtime).
        alive: whether a process id exists on this machine.
        quiet_after_s: a quiet spell this long is reported.
        cut_off_after_s: with no process to ask, a quiet spell this long is a cut off.
    """

    def __init__(
        self,
        path: Path,
        on_event: Callable[[ev.Event], None],
        on_writer: Callable[[WriterState], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = pid_alive,
        quiet_after_s: float = QUIET_AFTER_S,
        cut_off_after_s: float = CUT_OFF_AFTER_S,
    ) -> None:
        self.path = Path(path)
        self._emit = on_event
        self._on_writer = on_writer
        self._clock = clock
        self._wall = wall
        self._alive = alive
        self.quiet_after_s = quiet_after_s
        self.cut_off_after_s = cut_off_after_s
        self._offset = 0  # bytes of metrics.jsonl consumed
        self._partial = b""  # a line whose end has not arrived yet
        self._summary_mark: tuple[int, int] | None = None
        self.summary: dict[str, Any] = {}
        self._config: dict[str, Any] | None = None
        self._started_at: float | None = None  # wall time the run started
        self._history = History(HISTORY_RECORDS)
        self._epochs: list[EpochRecord] = []
        self._findings: list[Finding] = []
        self._layers: list[LayerInfo] = []
        self._steps = 0
        self._read_at = 0.0
        self._traceback = ""
        self._last_change = clock()
        self._announced = False
        self.state = WriterState(WAITING, 0.0, "waiting for the run to start writing")

    # -- one look at the folder ---------------------------------------------------------

    def poll(self) -> WriterState:
        """Read what is new, emit its events; returns the writer's state after it."""
        if self.state.done:
            return self.state
        # Asked before reading: a writer that ends between the two has written its
        # final summary first, so it is seen as ended, not as cut off.
        gone_before = writer_gone(self.summary, self._alive) if self.summary else None
        changed = self._read_summary()
        changed |= self._read_config()
        changed |= self._read_metrics()
        now = self._clock()
        if changed:
            self._last_change = now
        status = str(self.summary.get("status", "running"))
        if self.summary and status != "running":
            self._finish(status)
            return self._set(ENDED, 0.0, f"the run ended: {status}")
        if changed:
            gone = None  # a writer that still writes is not gone
        else:
            gone = writer_gone(self.summary, self._alive) if self.summary else gone_before
        quiet = now - self._last_change
        if gone:
            self._cut_off()
            return self._set(CUT_OFF, quiet, "the writing process ended without finishing "
                                              "the folder (killed or crashed)")
        if gone is None and quiet >= self.cut_off_after_s:
            self._cut_off()
            return self._set(CUT_OFF, quiet, f"nothing new for {_ago(quiet)}: taken as "
                                              "cut off")
        if not self._announced:
            return self._set(WAITING, quiet, "waiting for the run to start writing")
        if quiet >= self.quiet_after_s:
            return self._set(QUIET, quiet, f"no new lines for {_ago(quiet)}")
        return self._set(WRITING, quiet, "following the writer")

    def follow(self, stop: threading.Event, interval: float = POLL_INTERVAL_S) -> WriterState:
        """Poll until the writer is done or `stop` is set; returns the last state."""
        while not stop.is_set():
            state = self.poll()
            if state.done:
                return state
            stop.wait(interval)
        return self.state

    # -- the files ------------------------------------------------------------------------

    def _read_summary(self) -> bool:
        path = self.path / SUMMARY_FILE
        try:
            st = path.stat()
        except OSError:
            return False
        mark = (st.st_mtime_ns, st.st_size)
        if mark == self._summary_mark:
            return False
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False  # replaced under us, or not ours: look again next time
        if not isinstance(summary, dict):
            return False
        self._summary_mark = mark
        self.summary = summary
        layers = [LayerInfo.from_json(d) for d in summary.get("layers", []) or []
                  if isinstance(d, dict) and "name" in d]
        if layers:
            self._layers = sorted(layers, key=lambda i: i.depth)
        return True

    def _read_config(self) -> bool:
        if self._config is not None:
            return False
        path = self.path / CONFIG_FILE
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            self._started_at = path.stat().st_mtime
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        self._config = config if isinstance(config, dict) else {}
        self._announce()
        return True

    def _announce(self) -> None:
        if self._announced:
            return
        self._announced = True
        config = self._config or {}
        total = sum(int(s.get("epochs", 0) or 0) for s in config.get("stages", []) or []
                    if isinstance(s, dict))
        self._emit(ev.RunStarted(config, int(config.get("steps_per_epoch", 0) or 0), total))

    def _read_metrics(self) -> bool:
        path = self.path / METRICS_FILE
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        self._read_at = self._elapsed()  # one instant for all the lines of one read
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended with a newline
        objects = []
        for line in lines:
            try:
                obj = json.loads(line.decode("utf-8", errors="replace"))
            except json.JSONDecodeError:
                continue  # a corrupt line: read_run skips it too
            if isinstance(obj, dict):
                objects.append(obj)
        if objects and not self._announced:
            if self._started_at is None:
                self._started_at = self._wall()
            self._announce()  # an older folder without config.json still plays
        last_epoch = max((i for i, o in enumerate(objects) if o.get("type") == "epoch"),
                         default=-1)
        for i, obj in enumerate(objects):
            self._line(obj, diagnose_now=i == last_epoch)
        return True

    def _line(self, obj: dict[str, Any], *, diagnose_now: bool) -> None:
        kind = obj.get("type")
        try:
            if kind == "step":
                record = StepRecord.from_json(obj)
                self._history.append(record)
                self._steps = max(self._steps, record.step + 1)
                if not self._layers or any(n not in {i.name for i in self._layers}
                                           for n in record.layers):
                    self._layers = self._layers_from(record)
                self._emit(ev.StepSampled(record, list(self._layers), self._steps,
                                          self._read_at))
            elif kind == "epoch":
                epoch = EpochRecord.from_json(obj)
                self._epochs.append(epoch)
                self._steps = max(self._steps, epoch.steps)
                if diagnose_now:  # a backlog of epochs is diagnosed once, at its end
                    self._findings = self._diagnose()
                self._emit(ev.EpochEnded(epoch, list(self._findings)))
            elif kind == "stage":
                self._emit(ev.StageStarted(int(obj.get("index", 0)), str(obj.get("name", "")),
                                           int(obj.get("epochs", 0)),
                                           list(obj.get("trainable", []) or [])))
            elif kind == "error":
                self._traceback = str(obj.get("traceback") or "")
        except (KeyError, TypeError, ValueError, AttributeError):
            return  # a line of another shape: skipped, as read_run does

    def _layers_from(self, record: StepRecord) -> list[LayerInfo]:
        known = {i.name: i for i in self._layers}
        return [known.get(n) or LayerInfo(name=n, kind="", depth=d, num_params=0, param_names=())
                for d, n in enumerate(record.layers)]

    def _elapsed(self) -> float:
        return max(self._wall() - self._started_at, 0.0) if self._started_at else 0.0

    def _num_classes(self) -> int:
        data = (self._config or {}).get("data", {}) or {}
        return int(self.summary.get("num_classes") or data.get("num_classes") or 0)

    def _diagnose(self) -> list[Finding]:
        return diagnose(self._history.records(), self._layers, self._epochs, self._num_classes(),
                        exclude=self.summary.get("not_applicable") or ())

    # -- the end --------------------------------------------------------------------------

    def _finish(self, status: str) -> None:
        summary = self.summary
        self._announce()
        findings = [Finding.from_json(f) for f in summary.get("findings", []) or []]
        seconds = float(summary.get("seconds", 0.0) or 0.0)
        steps = int(summary.get("steps", 0) or 0) or self._steps
        if status == "failed":
            self._emit(ev.RunFailed(str(summary.get("error") or "training failed"),
                                    self._traceback, list(self._layers), findings, seconds,
                                    steps))
        else:
            final = RunStatus.parse(status) or RunStatus.INTERRUPTED  # not ours: stopped
            self._emit(ev.RunFinished(final, list(self._layers), summary.get("test"), findings,
                                      seconds, steps))

    def _cut_off(self) -> None:
        self._announce()
        findings = self._diagnose() if len(self._history) else list(self._findings)
        self._emit(ev.RunFinished(RunStatus.CUT_OFF, list(self._layers), None, findings,
                                  self._elapsed(), self._steps))

    def _set(self, state: str, quiet: float, detail: str) -> WriterState:
        new = WriterState(state, quiet, detail)
        # The detail counts a quiet spell in whole seconds: news once a second at most.
        news = (new.state, new.detail) != (self.state.state, self.state.detail)
        self.state = new
        if news and self._on_writer is not None:
            self._on_writer(new)
        return new
