"""Following a run folder that another process is writing (vgdiag/runs/follow.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from fake_runs import run_events, write_run

from vgdiag.engine.events import EpochEnded, Event, RunFinished, RunStarted, StepSampled
from vgdiag.runs.folder import METRICS_FILE, SUMMARY_FILE
from vgdiag.runs.follow import CUT_OFF, ENDED, QUIET, WRITING, FolderFollower, WriterState
from vgdiag.runs.reader import read_run
from vgdiag.runs.store import RunStore

TESTS = Path(__file__).parent

# Replays fake_runs.run_events into a folder: `gate` mode holds before the last event
# until a file appears; `hang` mode never writes it (the test kills the process).
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from fake_runs import run_events
    from vgdiag.engine.events import RunFinished
    from vgdiag.runs.store import RunStore
    folder, mode, delay = Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    with RunStore(folder, name="mlp-sigmoid-d7", num_classes=10) as store:
        for event in run_events():
            if isinstance(event, RunFinished):
                gate = folder.parent / "go"
                while not gate.exists():
                    time.sleep(0.02)
                if mode == "hang":
                    time.sleep(3600)
            store.handle(event)
            time.sleep(delay)
""")


def start_writer(tmp_path: Path, mode: str = "gate", delay: float = 0.0) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen([sys.executable, str(script), str(TESTS), str(tmp_path / "run"),
                             mode, str(delay)])


def wait_for(predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.states: list[WriterState] = []

    def kinds(self, kind: type) -> list:  # noqa: ANN401
        return [e for e in self.events if isinstance(e, kind)]


def test_follows_another_process_to_the_end_with_every_record(tmp_path: Path) -> None:
    writer = start_writer(tmp_path, delay=0.002)
    seen = Recorder()
    follower = FolderFollower(tmp_path / "run", seen.events.append, seen.states.append)
    try:
        expected = [e for e in run_events() if isinstance(e, StepSampled)]
        # Every line the writer wrote so far, while it still writes.
        wait_for(lambda: follower.poll() and len(seen.kinds(StepSampled)) == len(expected))
        assert follower.state.state == WRITING
        assert not seen.kinds(RunFinished)
        assert isinstance(seen.events[0], RunStarted)
        assert seen.events[0].steps_per_epoch == 50 and seen.events[0].total_epochs == 4
        (tmp_path / "go").touch()
        wait_for(lambda: follower.poll().done)
    finally:
        writer.wait(30)
    assert follower.state.state == ENDED
    finished = seen.kinds(RunFinished)
    assert len(finished) == 1 and finished[0].status == "completed"
    written = [e for e in run_events() if isinstance(e, RunFinished)][0]
    assert finished[0].test == written.test and finished[0].steps_done == written.steps_done
    # What was followed is what the folder holds, record for record.
    saved = read_run(tmp_path / "run")
    assert [e.record.step for e in seen.kinds(StepSampled)] == [r.step for r in saved.records]
    assert [e.record.layers["net.1"].grad_norm for e in seen.kinds(StepSampled)] == \
        [r.layers["net.1"].grad_norm for r in saved.records]
    assert [e.record.val_acc for e in seen.kinds(EpochEnded)] == [e.val_acc for e in saved.epochs]
    assert [s.state for s in seen.states][-1] == ENDED


def test_a_killed_writer_is_cut_off_at_once(tmp_path: Path) -> None:
    writer = start_writer(tmp_path, mode="hang")
    seen = Recorder()
    follower = FolderFollower(tmp_path / "run", seen.events.append, seen.states.append,
                              cut_off_after_s=3600)
    try:
        (tmp_path / "go").touch()
        wait_for(lambda: follower.poll() and len(seen.kinds(EpochEnded)) == 4)
        summary = json.loads((tmp_path / "run" / SUMMARY_FILE).read_text())
        assert summary["status"] == "running" and summary["writer"]["pid"] == writer.pid
        assert not follower.poll().done  # alive, writing nothing: not cut off
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    state = follower.poll()
    assert state.state == CUT_OFF and "ended without finishing" in state.detail
    final = seen.kinds(RunFinished)
    assert len(final) == 1 and final[0].status == "cut off"
    # The diagnosis is made from what the writer left, as read_run does.
    assert {f.id for f in final[0].findings} == {f.id for f in read_run(tmp_path / "run").findings}


def test_no_writer_to_ask_quiet_then_cut_off_by_the_clock(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run")
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    summary["status"] = "running"
    summary.pop("writer", None)  # an older folder, or one written on another machine
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    now = [0.0]
    seen = Recorder()
    follower = FolderFollower(folder, seen.events.append, seen.states.append,
                              clock=lambda: now[0], quiet_after_s=10, cut_off_after_s=60)
    assert follower.poll().state == WRITING
    now[0] = 11.0
    assert follower.poll().state == QUIET and follower.state.detail == "no new lines for 11 s"
    now[0] = 61.0
    assert follower.poll().state == CUT_OFF
    assert seen.kinds(RunFinished)[0].status == "cut off"
    assert [s.state for s in seen.states] == [WRITING, QUIET, CUT_OFF]


def test_a_half_written_line_waits_for_its_end(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    events = list(run_events())
    store = RunStore(folder, name="x", num_classes=10)
    for event in events[:3]:  # RunStarted, StageStarted, the first step
        store.handle(event)
    seen = Recorder()
    follower = FolderFollower(folder, seen.events.append)
    follower.poll()
    assert len(seen.kinds(StepSampled)) == 1
    line = json.dumps(events[3].record.to_json()) + "\n"  # type: ignore[union-attr]
    with open(folder / METRICS_FILE, "a") as f:
        f.write(line[:40])
        f.flush()
        follower.poll()
        assert len(seen.kinds(StepSampled)) == 1
        f.write(line[40:])
    follower.poll()
    assert [e.record.step for e in seen.kinds(StepSampled)] == [0, 10]
    store.close()  # interrupted: the follower ends with it
    assert follower.poll().state == ENDED
    assert seen.kinds(RunFinished)[0].status == "interrupted"


def test_follow_stops_when_asked(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "run")
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    summary["status"] = "running"
    summary["writer"] = {"pid": os.getpid(), "host": socket.gethostname()}  # alive
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    stop = threading.Event()
    follower = FolderFollower(folder, lambda e: None)
    thread = threading.Thread(target=follower.follow, args=(stop, 0.01))
    thread.start()
    time.sleep(0.1)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and not follower.state.done


# -- the dashboard following a folder (`vgdiag view` of a run in progress) -------------------


def rendered(widget) -> str:  # noqa: ANN001
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


async def until(pilot, predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the dashboard")
        await pilot.pause(0.05)


def test_view_follows_a_folder_another_process_writes(tmp_path: Path) -> None:
    from vgdiag.tui.app import build_app
    from vgdiag.tui.following import FollowedRun
    from vgdiag.tui.widgets import GradientBars, RunHeader

    writer = start_writer(tmp_path, delay=0.01)
    wait_for(lambda: (tmp_path / "run" / SUMMARY_FILE).exists())

    async def main() -> None:
        app = build_app(follow=FollowedRun(tmp_path / "run"), title="vgdiag view")
        async with app.run_test(size=(80, 24)) as pilot:
            header = app.query_one(RunHeader)
            # Training goes on in the other process; the screen keeps up with it.
            await until(pilot, lambda: app.view is not None and app.view.steps_done >= 100)
            assert "running · following the writer" in rendered(header)
            await until(pilot, lambda: len(app.view.epochs) == 4)  # all but the end
            await pilot.pause(0.3)  # a redraw
            assert "log10 grad norm, step 190" in rendered(app.query_one(GradientBars))
            assert app.view.status == "running" and app.view.steps_done == 200
            (tmp_path / "go").touch()
            await until(pilot, lambda: app.view.status == "completed")
            text = rendered(header)
            assert "completed" in text and "took 0:02" in text and "following" not in text
            assert app.view.test is not None and app.view.steps_done == 200
            await pilot.press("q")
        assert app.return_value == "completed"

    try:
        asyncio.run(main())
    finally:
        writer.wait(30)
    saved = read_run(tmp_path / "run")
    assert saved.status == "completed"


def test_view_says_when_the_writer_is_killed(tmp_path: Path) -> None:
    from vgdiag.tui.app import build_app
    from vgdiag.tui.following import FollowedRun
    from vgdiag.tui.widgets import RunHeader

    writer = start_writer(tmp_path, mode="hang")
    (tmp_path / "go").touch()

    async def main() -> None:
        app = build_app(follow=FollowedRun(tmp_path / "run"), title="vgdiag view")
        async with app.run_test(size=(80, 24)) as pilot:
            await until(pilot, lambda: app.view is not None and len(app.view.epochs) == 4)
            assert app.view.status == "running"
            writer.send_signal(signal.SIGKILL)
            writer.wait(30)
            await until(pilot, lambda: app.view.status == "cut off")
            assert "cut off" in rendered(app.query_one(RunHeader))
            assert {f.id for f in app.view.findings} >= {"loss_stalled"}
            await pilot.press("q")
        assert app.return_value == "cut off"

    try:
        asyncio.run(main())
    finally:
        if writer.poll() is None:
            writer.kill()
