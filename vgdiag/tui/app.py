"""The dashboard's factory and entry points.

`build_app` makes the app for a run trained here, a folder another process writes,
or a saved folder; the snapshot tests build it the same way. `run_dashboard` trains
with it open, `view_folder` follows or replays a folder (`vgdiag view`). The board
of `vgdiag compare` is compare_board.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vgdiag.engine.experiment import Experiment
from vgdiag.engine.splits import DataBundle
from vgdiag.runs.compare import BASELINE
from vgdiag.runs.reader import RunData
from vgdiag.runs.store import RunStore
from vgdiag.tui.dashboard import VgdiagApp
from vgdiag.tui.following import FollowedRun
from vgdiag.tui.session import TrainingSession
from vgdiag.tui.state import view_from_run


def build_app(
    *,
    experiment: Experiment | None = None,
    data: DataBundle | None = None,
    store: RunStore | None = None,
    run: RunData | None = None,
    follow: FollowedRun | None = None,
    compare_with: Sequence[RunData] = (),
    title: str = "vgdiag",
    plugins: Mapping[str, Any] | None = None,
) -> VgdiagApp:
    """The dashboard app, for a live run, a followed folder or a saved one.

    Args:
        experiment: the recipe to train (live mode).
        data: its data (live mode).
        store: the run folder's writer; it receives every event (live mode).
        run: a saved run folder read with `read_run` (saved mode).
        follow: a folder another process is writing (followed mode).
        compare_with: saved runs to open beside `run` in the before/after view.
        title: shown at the top left.
        plugins: the mitigations the fix picker offers; None discovers the installed ones.
    """
    if run is not None:
        return VgdiagApp(view_from_run(run), saved_after=[view_from_run(r) for r in compare_with],
                         title=title, plugins=plugins)
    if follow is not None:
        return VgdiagApp(follow, title=title, plugins=plugins)
    if experiment is None or data is None or store is None:
        raise ValueError("build_app needs experiment, data and store, or run, or follow")
    session = TrainingSession(experiment, data, store, label=BASELINE)
    return VgdiagApp(session, title=title, plugins=plugins)


def run_dashboard(
    experiment: Experiment, data: DataBundle, store: RunStore, *, title: str
) -> str:
    """Train `experiment` with the dashboard open; returns the final status.

    The status is "completed", "interrupted" (the user quit first) or "failed". The
    store receives every event from the training thread and is complete whenever
    the user quits; the caller still owns it (and closes it).

    Raises:
        UserError: the recipe could not be trained as given (shown after the UI closes).
    """
    app = build_app(experiment=experiment, data=data, store=store, title=title)
    try:
        app.run()
    finally:
        app.stop_training()
        for session in app.sessions():
            if session.started.is_set():
                session.wait()
    main = app.session
    assert main is not None
    if main.user_error is not None:
        raise main.user_error
    if not main.started.is_set():
        store.mark_interrupted()
        return "interrupted"
    return main.status or "interrupted"


def view_folder(path: Path, run: RunData) -> None:
    """`vgdiag view`: a folder still being written is followed, a finished one replayed.

    `run` is the folder as read once (read_run), which already told it apart: a
    summary still saying "running" is a run in progress or one cut off, and the
    follower finds out which.
    """
    if run.summary.get("status", "running") == "running":
        build_app(follow=FollowedRun(path), title="vgdiag view").run()
    else:
        build_app(run=run, title="vgdiag view").run()

