"""SVG snapshots of the dashboard's screens, built through the same factory as `vgdiag view`.

Each main screen at 80x24 and 120x40, replayed (a finished folder) and live (a folder
still being written, followed). The folders are written from fixed numbers
(tests/fake_runs.py): no training, and the follower's clocks are fixed, so the
pictures are the same on any machine. Regenerate after a deliberate change with
`pytest tests/test_tui_snapshots.py --snapshot-update` and look at the SVGs before
committing them.
"""

from __future__ import annotations

import json
import os
import socket
from functools import partial
from pathlib import Path

import pytest
from fake_runs import run_events, write_run

from vgdiag.engine.events import RunFinished
from vgdiag.runs.folder import CONFIG_FILE, SUMMARY_FILE
from vgdiag.runs.follow import FolderFollower
from vgdiag.runs.reader import read_run
from vgdiag.runs.store import RunStore
from vgdiag.tui.app import build_app
from vgdiag.tui.dashboard import VgdiagApp
from vgdiag.tui.following import FollowedRun
from vgdiag.tui.screens.fix_picker import FixChoice, FixPicker

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
TABS = {"gradients": [], "layers": ["2", "down"], "distributions": ["2", "down", "3"],
        "updates": ["2", "down", "4"], "activations": ["2", "down", "5"], "training": ["6"],
        "findings": ["7"]}
STARTED = 1_700_000_000.0  # the followed run's config.json mtime


def in_progress(folder: Path) -> Path:
    """A folder as a live writer leaves it mid-run: every event but the last, written."""
    store = RunStore(folder, name="mlp-sigmoid-d7", num_classes=10)
    for event in run_events():
        if not isinstance(event, RunFinished):
            store.handle(event)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    summary["writer"] = {"pid": os.getpid(), "host": socket.gethostname()}  # alive
    (folder / SUMMARY_FILE).write_text(json.dumps(summary))
    os.utime(folder / CONFIG_FILE, (STARTED, STARTED))
    store._metrics.close()  # never finished: no status written
    return folder


def followed_app(folder: Path) -> VgdiagApp:
    follower = partial(FolderFollower, clock=lambda: 0.0, wall=lambda: STARTED + 65.0)
    return build_app(follow=FollowedRun(folder, follower=follower), title="vgdiag view")


async def until_followed(pilot) -> None:  # noqa: ANN001
    for _ in range(400):
        view = pilot.app.view
        if view is not None and len(view.epochs) == 4:
            break
        await pilot.pause(0.05)
    await pilot.pause(0.3)  # one redraw tick


@pytest.fixture
def saved_app(tmp_path: Path) -> VgdiagApp:
    return build_app(run=read_run(write_run(tmp_path / "run")), title="vgdiag view")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tab", TABS)
def test_replayed(snap_compare, saved_app: VgdiagApp, tab: str, size: str) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=TABS[tab], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tab", TABS)
def test_live(snap_compare, tmp_path: Path, tab: str, size: str) -> None:  # noqa: ANN001
    app = followed_app(in_progress(tmp_path / "run"))
    assert snap_compare(app, press=TABS[tab], terminal_size=SIZES[size],
                        run_before=until_followed)


def test_gradients_16_colours(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    saved_app.theme = "ansi-dark"
    assert snap_compare(saved_app, terminal_size=(80, 24))


def test_gradients_200x60(snap_compare, saved_app: VgdiagApp) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, terminal_size=(200, 60))


@pytest.mark.parametrize("size", SIZES)
def test_help(snap_compare, saved_app: VgdiagApp, size: str) -> None:  # noqa: ANN001
    assert snap_compare(saved_app, press=["question_mark"], terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
def test_fix_picker(snap_compare, saved_app: VgdiagApp, size: str) -> None:  # noqa: ANN001
    choices = [
        FixChoice("weight-init", "re-initialise weights larger", None, True),
        FixChoice("relu", "replace saturating activations with ReLU and re-initialise "
                  "the weights for it (He)", None, True),
        FixChoice("adam", "train with Adam instead of SGD", "already uses Adam", False),
    ]

    async def open_picker(pilot) -> None:  # noqa: ANN001
        saved_app.push_screen(FixPicker(choices))
        await pilot.pause()

    assert snap_compare(saved_app, terminal_size=SIZES[size], run_before=open_picker)


@pytest.mark.parametrize("size", SIZES)
def test_before_after(snap_compare, tmp_path: Path, size: str) -> None:  # noqa: ANN001
    before = read_run(write_run(tmp_path / "run"))
    after = read_run(write_run(tmp_path / "run-batchnorm", fixed=True, batchnorm=True,
                               name="mlp-sigmoid-d7-batchnorm"))
    app = build_app(run=before, compare_with=[after], title="vgdiag compare")
    assert snap_compare(app, terminal_size=SIZES[size])
