"""A run folder another process writes, followed from a worker thread.

No Textual here: the follower (vgdiag/runs/follow.py) replays the folder as engine
events, this folds them into a RunState like a run trained in this process, and
hands `run` a plain callable to say "look again".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from vgdiag.engine.events import Event
from vgdiag.runs.compare import BASELINE
from vgdiag.runs.follow import ENDED, FolderFollower, WriterState
from vgdiag.tui.state import RunState


class FollowedRun:
    """The dashboard's view of a folder being written elsewhere; stoppable from another thread.

    Args:
        path: the run folder.
        label: how the dashboard names this run.
        follower: makes the FolderFollower (tests pass clocks through it).
    """

    def __init__(
        self,
        path: Path,
        *,
        label: str = BASELINE,
        follower: Callable[..., FolderFollower] = FolderFollower,
    ) -> None:
        self.path = Path(path)
        self.label = label
        self.state = RunState(self.path.name)
        self.state.set_path(str(self.path))
        self.state.set_following("waiting for the run to start writing")
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.writer: WriterState | None = None  # the last word on the writer
        self._make_follower = follower

    @property
    def running(self) -> bool:
        """Still following (the writer may write more)."""
        return not self.finished.is_set()

    def stop(self) -> None:
        """Stop following; the folder is not ours, so nothing else is done to it."""
        self.stop_event.set()

    def run(self, notify: Callable[[], None], interval: float | None = None) -> str:
        """Follow until the writer is done or `stop`; returns the run's status."""

        def on_event(event: Event) -> None:
            self.state.apply(event)
            notify()

        def on_writer(state: WriterState) -> None:
            self.writer = state
            self.state.set_following("" if state.state == ENDED else state.detail)
            notify()

        follower = self._make_follower(self.path, on_event, on_writer)
        try:
            if interval is None:
                follower.follow(self.stop_event)
            else:
                follower.follow(self.stop_event, interval)
        finally:
            self.finished.set()
        return self.state.view().status
