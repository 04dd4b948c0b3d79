"""One training run driven from a worker thread: store first, then state, then the UI.

No Textual here: the dashboard hands `run` a plain callable that posts messages, the
throughput benchmark hands it nothing. Pausing blocks the worker between two events
of the trainer's stream (it yields after every few steps), stopping sets the event
the trainer polls; either way the stream still ends with RunFinished or RunFailed
and the run folder is complete.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Iterator

from vgdiag.engine.events import Event, RunFailed, RunFinished
from vgdiag.engine.experiment import Experiment
from vgdiag.engine.splits import DataBundle
from vgdiag.engine.trainer import run_training
from vgdiag.errors import UserError
from vgdiag.runs.compare import BASELINE
from vgdiag.runs.store import RunStore
from vgdiag.tui.state import RunState


def _ignore(event: Event) -> None:
    return None


class TrainingSession:
    """Trains one Experiment into one RunStore, pausable and stoppable from another thread.

    Args:
        experiment: the recipe to train.
        data: the data to train it on.
        store: receives every event, from the worker thread, before anyone else.
        label: how the dashboard names this run (BASELINE or a plugin name).
    """

    def __init__(
        self, experiment: Experiment, data: DataBundle, store: RunStore, *,
        label: str = BASELINE
    ) -> None:
        self.experiment = experiment
        self.data = data
        self.store = store
        self.label = label
        self.state = RunState(experiment.name, data.num_classes)
        self.state.set_path(str(store.path))
        self.stop_event = threading.Event()  # the trainer polls it between steps
        self._resume = threading.Event()  # cleared while paused
        self._resume.set()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.status: str | None = None  # completed | interrupted | failed, once finished
        self.user_error: UserError | None = None  # re-raised by the caller after the UI closes

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def running(self) -> bool:
        """Started (or about to) and not finished yet."""
        return not self.finished.is_set()

    def pause(self) -> None:
        """Hold the worker before it pulls the next event from the trainer."""
        if self.running and not self.stop_event.is_set():
            self._resume.clear()
            self.state.set_paused(True)

    def resume(self) -> None:
        self.state.set_paused(False)
        self._resume.set()

    def stop(self) -> None:
        """Ask the run to end; it still writes RunFinished (interrupted) to the store."""
        if self.running and not self.stop_event.is_set():
            self.state.set_stopping()
        self.stop_event.set()
        self._resume.set()  # a paused worker must wake up to finish

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run has finished (True) or `timeout` passed (False)."""
        return self.finished.wait(timeout)

    def run(self, notify: Callable[[Event], None] = _ignore) -> str:
        """Train to the end in the calling thread; returns the final status.

        Every event goes to the store, then to the state, then to `notify`.
        """
        self.started.set()
        t0 = time.perf_counter()
        events: Iterator[Event] | None = None
        final: Event | None = None
        try:
            events = run_training(self.experiment, self.data, self.stop_event)
            while True:
                self._resume.wait()
                try:
                    event = next(events)
                except StopIteration:
                    break
                self.store.handle(event)
                self.state.apply(event)
                if isinstance(event, (RunFinished, RunFailed)):
                    final = event
                notify(event)
        except UserError as exc:
            self.user_error = exc
            final = self._fail(str(exc), "", t0, notify)
        except Exception as exc:  # the store's disk, or a bug outside the trainer's guard
            final = self._fail(
                f"{type(exc).__name__}: {exc}".splitlines()[0], traceback.format_exc(), t0, notify
            )
        finally:
            if events is not None and hasattr(events, "close"):
                events.close()  # runs the trainer's finally: probe hooks come off
            if final is None:
                # The stream ended without its last event (only a broken trainer does this).
                self.store.mark_interrupted()
                self.status = "interrupted"
            else:
                self.status = final.status if isinstance(final, RunFinished) else "failed"
            self.finished.set()
        return self.status

    def _fail(
        self, error: str, trace: str, t0: float, notify: Callable[[Event], None]
    ) -> RunFailed:
        known = self.state.view()
        event = RunFailed(
            error=error,
            traceback=trace,
            layers=list(known.layers),
            findings=list(known.findings),
            seconds=time.perf_counter() - t0,
            steps_done=known.steps_done,
        )
        # If the disk is what failed, writing may fail again; the dashboard still shows why.
        with contextlib.suppress(Exception):
            self.store.handle(event)
        self.state.apply(event)
        notify(event)
        return event
