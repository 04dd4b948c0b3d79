"""The dashboard, driven through Pilot on tiny real runs (digits, 3 sigmoid layers of 16)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vgdiag.engine.events import RunFinished, StepProgress, StepSampled
from vgdiag.engine.experiment import Experiment
from vgdiag.engine.records import Histogram, LayerInfo, LayerStats, StepRecord
from vgdiag.engine.splits import DataBundle
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.compare import build_specs
from vgdiag.runs.reader import read_run
from vgdiag.runs.store import RunStore
from vgdiag.tui.app import build_app
from vgdiag.tui.charts import BrailleCanvas, hbar, log_fraction, rebin
from vgdiag.tui.dashboard import VgdiagApp
from vgdiag.tui.screens.compare import CompareScreen
from vgdiag.tui.screens.fix_picker import FixPicker
from vgdiag.tui.screens.help import HelpScreen
from vgdiag.tui.session import TrainingSession
from vgdiag.tui.state import RunState, grad_ratios, health, view_from_run
from vgdiag.tui.variant import variant_folder
from vgdiag.tui.widgets import FindingsView, LayerHistogramsPanel, LayerTable, RunHeader

SIZE = (100, 30)


def tiny(epochs: int = 2, **changes: object) -> tuple[Experiment, DataBundle]:
    opts = RunOptions(epochs=epochs, depth=3, width=16, data="digits", device="cpu",
                      every=2, hist_every=3, **changes)  # type: ignore[arg-type]
    data = load_data(opts)
    return build_experiment(opts, data), data


def live_app(tmp_path: Path, epochs: int = 2, **kwargs: object) -> VgdiagApp:
    experiment, data = tiny(epochs)
    store = RunStore(tmp_path / "run", name=experiment.name, num_classes=data.num_classes)
    return build_app(experiment=experiment, data=data, store=store, title="test",
                     **kwargs)  # type: ignore[arg-type]


async def wait_for(pilot, predicate, timeout: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the dashboard")
        await pilot.pause(0.05)


def rendered(widget) -> str:  # noqa: ANN001
    """The plain text a widget draws now."""
    return "\n".join(strip.text for strip in widget.render_lines(widget.region.reset_offset))


# -- pure parts --------------------------------------------------------------------------


def test_health_uses_the_diagnosis_limits() -> None:
    assert health(5e-4) == "bad"
    assert health(5e-3) == "weak"
    assert health(0.5) == "ok"
    assert health(1.0) == "ok"
    assert health(500.0) == "weak"
    assert health(5e4) == "bad"
    assert health(math.nan) == "none"
    assert health(math.inf) == "bad"


def test_grad_ratios_divide_by_the_last_trainable_layer() -> None:
    layers = [LayerInfo("a", "Linear", 0, 1, ("weight",)),
              LayerInfo("b", "Linear", 1, 1, ("weight",)),
              LayerInfo("c", "Linear", 2, 1, ("weight",), trainable=False)]
    record = StepRecord(0, 1, 2.3, {"a": LayerStats(grad_norm=1e-4), "b": LayerStats(grad_norm=0.5),
                                    "c": LayerStats(grad_norm=9.0)})
    ratios = grad_ratios(record, layers)
    assert ratios["a"] == pytest.approx(2e-4)
    assert ratios["b"] == pytest.approx(1.0)


def test_rebin_keeps_counts_and_moves_them_to_the_right_place() -> None:
    counts = np.array([4, 0, 6], dtype=np.int64)  # bins [0,1), [1,2), [2,3)
    out = rebin(counts, 0.0, 3.0, -3.0, 3.0, 6)  # bins of width 1 over [-3, 3)
    assert out.sum() == pytest.approx(10.0)
    assert out.tolist() == pytest.approx([0, 0, 0, 4, 0, 6])
    halves = rebin(np.array([8]), 0.0, 1.0, 0.0, 1.0, 2)
    assert halves.tolist() == pytest.approx([4, 4])


def test_bars_and_scales() -> None:
    assert hbar(0.5, 10) == "█████     "
    assert hbar(0.25, 2) == "▌ "  # half a cell
    assert hbar(1 / 16, 2) == "▏ "  # one eighth
    assert hbar(math.nan, 3) == "   "
    assert log_fraction(1e-2, -4.0, 0.0) == pytest.approx(0.5)
    assert math.isnan(log_fraction(0.0, -4.0, 0.0))


def test_braille_canvas_puts_a_line_corner_to_corner() -> None:
    canvas = BrailleCanvas(2, 1)  # 4 x 4 dots
    canvas.plot([0.0, 1.0], [0.0, 1.0], (0.0, 1.0), (0.0, 1.0), 0)
    (left, _), (right, _) = canvas.rows()[0]
    # bottom-left dot (x0, y3) and top-right dot (x3, y0) are set
    assert ord(left) - 0x2800 & 0x40
    assert ord(right) - 0x2800 & 0x08


def test_state_rate_time_left_and_pause() -> None:
    state = RunState("r", 10)
    from vgdiag.engine.events import RunStarted

    state.apply(RunStarted({"device": "cpu"}, steps_per_epoch=100, total_epochs=3))
    state.apply(StepProgress(1, 50, 1.0))
    state.apply(StepProgress(1, 150, 2.0))
    view = state.view()
    assert view.steps_per_second == pytest.approx(100.0)
    assert view.total_steps == 300
    assert view.seconds_left == pytest.approx((300 - 150) / 100.0)
    state.set_paused(True)
    paused = state.view()
    assert paused.status == "paused"
    assert math.isnan(paused.steps_per_second)  # the window restarts after a pause


def test_state_reads_the_run_from_the_one_fold_of_its_events() -> None:
    from vgdiag.engine.summary import RunSummary
    from vgdiag.engine.trainer import run_training

    experiment, data = tiny(epochs=2)
    state, summary = RunState(experiment.name, data.num_classes), RunSummary(experiment.name)
    assert state.view().status == "starting"
    for event in run_training(experiment, data):
        state.apply(event)
        summary.apply(event)
        view = state.view()
        assert (view.status, view.steps_done, view.epoch) == (
            summary.status, summary.steps, summary.epoch)
    assert view.finished and view.status == "completed"
    assert [e.epoch for e in view.epochs] == [e.epoch for e in summary.epochs] == [1, 2]
    assert list(view.findings) == summary.findings
    assert view.layers == tuple(sorted(summary.layers, key=lambda i: i.depth))
    assert view.test == summary.test and view.seconds == summary.seconds
    assert view.last is not None and summary.last is not None
    assert view.last.step == summary.last.step


def test_state_keeps_init_and_latest_histograms() -> None:
    state = RunState("r")
    layer = [LayerInfo("0", "Linear", 0, 4, ("weight",))]
    for step in (0, 10, 20):
        hist = Histogram(-1.0, 1.0, np.array([step, 1], dtype=np.int64))
        record = StepRecord(step, 1, 2.0, {"0": LayerStats(grad_norm=1.0)},
                            weight_hist={"0": hist} if step != 10 else {})
        state.apply(StepSampled(record, layer, step + 1, float(step)))
    hists = state.view().weight_hists["0"]
    assert (hists.init_step, hists.now_step) == (0, 20)
    assert hists.init.counts.tolist() == [0, 1]
    assert hists.now.counts.tolist() == [20, 1]


def test_variant_folder_is_a_numbered_sibling(tmp_path: Path) -> None:
    base = tmp_path / "run"
    assert variant_folder(base, "relu") == tmp_path / "run-relu"
    (tmp_path / "run-relu").mkdir()
    (tmp_path / "run-relu" / "summary.json").write_text("{}")
    assert variant_folder(base, "relu") == tmp_path / "run-relu-2"


# -- the live dashboard --------------------------------------------------------------------


def test_a_run_completes_and_the_folder_matches_the_screen(tmp_path: Path) -> None:
    async def main() -> None:
        app = live_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            session = app.session
            assert session is not None
            await wait_for(pilot, lambda: not session.running)
            await pilot.pause(0.4)  # one redraw tick
            view = app.view
            assert view is not None and view.status == "completed"
            assert "completed" in rendered(app.query_one(RunHeader))
            await pilot.press("q")
        assert app.return_value == "completed"
        saved = read_run(tmp_path / "run")
        assert saved.status == "completed"
        assert [e.epoch for e in saved.epochs] == [e.epoch for e in view.epochs] == [1, 2]
        assert session.experiment.train.epochs == 2
        per_epoch = math.ceil(len(session.data.train) / session.experiment.train.batch_size)
        assert view.steps_done == saved.summary["steps"] == 2 * per_epoch
        assert [r.step for r in saved.records] == [r.step for r in view.records]
        assert [f.id for f in saved.findings] == [f.id for f in view.findings]

    asyncio.run(main())


def test_pause_holds_training_and_quit_leaves_an_interrupted_folder(tmp_path: Path) -> None:
    async def main() -> None:
        app = live_app(tmp_path, epochs=200)
        async with app.run_test(size=SIZE) as pilot:
            session = app.session
            assert session is not None
            await wait_for(pilot, lambda: session.state.view().steps_done >= 4)
            await pilot.press("p")
            assert session.paused
            assert app.view is not None and app.view.status == "paused"
            await pilot.pause(0.3)  # the worker may finish the event it was on
            held = session.state.view().steps_done
            await pilot.pause(0.5)
            assert session.state.view().steps_done == held
            await pilot.press("space")
            assert not session.paused
            await wait_for(pilot, lambda: session.state.view().steps_done > held)
            await pilot.press("p")
            await pilot.press("q")  # quitting while paused must still end the run
            await wait_for(pilot, lambda: not session.running)
        assert app.return_value == "interrupted"
        saved = read_run(tmp_path / "run")
        assert saved.status == "interrupted"
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["steps"] > held

    asyncio.run(main())


def test_help_lists_the_keys_and_closes(tmp_path: Path) -> None:
    async def main() -> None:
        app = live_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            keys = [b.key for b in app.screen.bindings]
            assert "p,space" in keys and "f" in keys and "q" in keys
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running)
        assert read_run(tmp_path / "run").status in ("completed", "interrupted")

    asyncio.run(main())


def test_layer_selection_drives_the_histograms(tmp_path: Path) -> None:
    async def main() -> None:
        app = live_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            session = app.session
            assert session is not None
            await wait_for(pilot, lambda: not session.running)
            await pilot.pause(0.4)
            await pilot.press("2")
            table = app.query_one(LayerTable)
            await pilot.pause()
            assert table.has_focus
            names = [i.name for i in app.view.layers]  # type: ignore[union-attr]
            assert names == ["1", "3", "5", "7"]
            assert app.selected_layer == "1"
            await pilot.press("down", "down")
            await pilot.pause()
            assert app.selected_layer == "5"
            panel = app.query_one(LayerHistogramsPanel)
            assert panel.selected == "5"
            text = rendered(panel)
            assert "layer 5 · Linear · 272 params" in text  # 16x16 weights + 16 biases
            pair = app.view.weight_hists["5"]  # type: ignore[union-attr]
            assert f"init: step {pair.init_step} · now: step {pair.now_step}" in text
            assert pair.init_step == 0 and pair.now_step > 0
            # The spread shown is the histogram's own, computed here independently.
            for hist in (pair.init, pair.now):
                centres = (np.arange(len(hist.counts)) + 0.5) * (hist.hi - hist.lo) / len(
                    hist.counts) + hist.lo
                p = hist.counts / hist.counts.sum()
                std = float(np.sqrt((p * (centres - (p * centres).sum()) ** 2).sum()))
                assert f"{std:.3g}" in text
            await pilot.press("q")

    asyncio.run(main())


def test_a_failing_model_shows_the_error_and_the_app_stays_usable(tmp_path: Path) -> None:
    class FailsLater(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 6:
                raise RuntimeError("the model broke on its sixth batch")
            return self.inner(x)

    async def main() -> None:
        experiment, data = tiny()
        experiment = experiment.replace(model_transforms=[FailsLater])
        store = RunStore(tmp_path / "run", name=experiment.name, num_classes=data.num_classes)
        app = build_app(experiment=experiment, data=data, store=store, title="test")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.view is not None and app.view.status == "failed")
            await pilot.press("7")
            await pilot.pause()
            text = rendered(app.query_one(FindingsView))
            assert "training failed: RuntimeError: the model broke on its sixth batch" in text
            await pilot.press("1", "question_mark", "escape")  # still answering keys
            await pilot.press("q")
        assert app.return_value == "failed"
        saved = read_run(tmp_path / "run")
        assert saved.status == "failed"
        raised_at = next(i for i, line in enumerate(Path(__file__).read_text().splitlines(), 1)
                         if 'raise RuntimeError("the model broke on its sixth batch")' in line)
        assert saved.summary["error"] == ("RuntimeError: the model broke on its sixth batch"
                                          f" (test_tui.py:{raised_at})")

    asyncio.run(main())


def test_apply_a_fix_trains_a_sibling_run_and_opens_before_after(tmp_path: Path) -> None:
    from vgdiag.plugin_api import discover_plugins

    plugins, _ = discover_plugins()

    async def main() -> None:
        app = live_app(tmp_path, plugins={"adam": plugins["adam"], "relu": plugins["relu"]})
        async with app.run_test(size=SIZE) as pilot:
            session = app.session
            assert session is not None
            await wait_for(pilot, lambda: not session.running)
            await pilot.press("f")
            await pilot.pause()
            assert isinstance(app.screen, FixPicker)
            assert [c.name for c in app.screen.choices] == ["adam", "relu"]
            assert all(c.why_not is None for c in app.screen.choices)
            await pilot.press("enter")  # the first applicable one: adam
            await pilot.pause()
            assert isinstance(app.screen, CompareScreen)
            variant = app.variant
            assert variant is not None and variant.label == "adam"
            await wait_for(pilot, lambda: not variant.running)
            await pilot.pause(0.4)
            assert app.screen.after is not None and app.screen.after.status == "completed"
            assert app.screen.before is app.view
            await pilot.press("escape")
            assert not isinstance(app.screen, CompareScreen)
            await pilot.press("c")
            assert isinstance(app.screen, CompareScreen)
            await pilot.press("q")
        fixed = read_run(tmp_path / "run-adam")
        assert fixed.status == "completed"
        assert fixed.config["experiment"]["optimizer"] == "adam"
        assert fixed.config["experiment"]["plugins"] == ["adam"]
        base = read_run(tmp_path / "run")
        # Same seed, same data order: the first sampled batch loss is identical.
        assert fixed.records[0].loss == pytest.approx(base.records[0].loss)

    asyncio.run(main())


def test_screenshot_and_report_land_in_the_run_folder(tmp_path: Path) -> None:
    async def main() -> None:
        app = live_app(tmp_path)
        async with app.run_test(size=SIZE) as pilot:
            session = app.session
            assert session is not None
            await wait_for(pilot, lambda: not session.running)
            await pilot.press("s")
            await pilot.press("r")
            await app.workers.wait_for_complete()
            await pilot.press("q")
        folder = tmp_path / "run"
        svgs = list(folder.glob("screenshot-*.svg"))
        assert len(svgs) == 1 and svgs[0].read_text().lstrip().startswith("<svg")
        report = folder / "report.html"
        assert report.exists() and "<html" in report.read_text().lower()

    asyncio.run(main())


# -- a saved run ---------------------------------------------------------------------------


def test_replay_shows_the_saved_run(tmp_path: Path) -> None:
    experiment, data = tiny()
    with RunStore(tmp_path / "run", name=experiment.name, num_classes=data.num_classes) as store:
        session = TrainingSession(experiment, data, store)
        assert session.run() == "completed"
    live = session.state.view()
    saved = read_run(tmp_path / "run")

    async def main() -> None:
        app = build_app(run=saved, title="view")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            view = app.view
            assert view is not None and not view.live
            assert view.status == "completed"
            assert [e.val_acc for e in view.epochs] == [e.val_acc for e in live.epochs]
            assert [r.step for r in view.records] == [r.step for r in live.records]
            assert view.weight_hists.keys() == live.weight_hists.keys()
            assert "completed (saved run)" in rendered(app.query_one(RunHeader))
            assert app.check_action("toggle_pause", ()) is False  # nothing to pause
            await pilot.press("p", "f")  # no effect, no crash
            assert app.screen is app.screen_stack[0]
            await pilot.press("q")
        assert app.return_value == "completed"

    asyncio.run(main())


def test_view_from_run_of_an_interrupted_folder(tmp_path: Path) -> None:
    experiment, data = tiny(epochs=50)
    with RunStore(tmp_path / "run", name=experiment.name, num_classes=data.num_classes) as store:
        session = TrainingSession(experiment, data, store)

        def stop_soon(event: object) -> None:
            if isinstance(event, StepSampled) and event.steps_done >= 10:
                session.stop()
            assert not isinstance(event, RunFinished) or event.status == "interrupted"

        assert session.run(stop_soon) == "interrupted"
    view = view_from_run(read_run(tmp_path / "run"))
    assert view.status == "interrupted"
    assert view.steps_done == session.state.view().steps_done


# -- the comparison board ------------------------------------------------------------------


def test_compare_board_runs_the_variants_and_opens_before_after(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from vgdiag.tui.compare_board import CompareApp

    opts = RunOptions(epochs=1, depth=3, width=16, data="digits", device="cpu", every=4)

    async def main() -> None:
        app = CompareApp(opts, build_specs(["adam", "relu"], {}), tmp_path / "cmp")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: not app.running, timeout=60)
            table = app.query_one("#board", DataTable)
            states = [str(table.get_cell(n, "state")) for n in ("baseline", "adam", "relu")]
            assert states == ["done", "done", "done"]
            await pilot.press("down")  # adam
            await pilot.press("enter")
            assert isinstance(app.screen, CompareScreen)
            assert app.screen.after is not None and app.screen.after.plugins == ("adam",)
            await pilot.press("escape", "q")
        outcomes = app.return_value
        assert outcomes is not None and [o.name for o in outcomes] == ["baseline", "adam", "relu"]
        for o in outcomes:
            assert o.run_dir is not None and read_run(o.run_dir).status == "completed"

    asyncio.run(main())


def test_compare_board_quit_skips_the_variants_not_started(tmp_path: Path) -> None:
    from vgdiag.tui.compare_board import CompareApp

    opts = RunOptions(epochs=2, depth=3, width=16, data="digits", device="cpu", every=4)

    async def main() -> None:
        app = CompareApp(opts, build_specs(["adam", "relu"], {}), tmp_path / "cmp")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("q")  # while the baseline trains
            assert app.stop_requested
            await wait_for(pilot, lambda: not app.is_running, timeout=60)
        outcomes = app.return_value
        assert outcomes is not None and [o.name for o in outcomes] == ["baseline"]
        assert read_run(tmp_path / "cmp" / "baseline").status == "completed"
        assert not (tmp_path / "cmp" / "relu").exists()

    asyncio.run(main())


def test_compare_board_ctrl_c_interrupts_the_variants_in_training(tmp_path: Path) -> None:
    # As in the headless compare: ctrl+c does not wait for the running variants.
    from vgdiag.tui.compare_board import CompareApp

    opts = RunOptions(epochs=200, depth=3, width=16, data="digits", device="cpu", every=4)

    async def main() -> None:
        app = CompareApp(opts, build_specs(["adam"], {}), tmp_path / "cmp")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: (tmp_path / "cmp" / "baseline").exists(), timeout=60)
            await pilot.press("ctrl+c")
            await wait_for(pilot, lambda: not app.running, timeout=60)
            await pilot.press("q")
            await wait_for(pilot, lambda: not app.is_running, timeout=30)
        outcomes = app.return_value
        assert outcomes is not None and [o.name for o in outcomes] == ["baseline"]
        run = read_run(tmp_path / "cmp" / "baseline")
        assert run.status == "interrupted" and len(run.epochs) < 200
        assert not (tmp_path / "cmp" / "adam").exists()

    asyncio.run(main())


def test_compare_board_keeps_its_numbers_beside_a_variant_that_does_not_apply(
        tmp_path: Path) -> None:
    # layerwise refuses a model with its own forward, in a sentence: the sentence goes
    # below the table, which keeps every column on the screen.
    from textual.widgets import DataTable, Static

    from vgdiag.tui.compare_board import CompareApp

    (tmp_path / "net.py").write_text(
        "from torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = nn.Linear(64, 16), nn.Linear(16, 10)\n"
        "    def forward(self, x):\n"
        "        return self.b(self.a(x.flatten(1)).sigmoid())\n")
    opts = RunOptions(epochs=1, data="digits", device="cpu", every=4,
                      model=f"{tmp_path / 'net.py'}:Net")

    async def main() -> None:
        app = CompareApp(opts, build_specs(["layerwise"], {}), tmp_path / "cmp")
        async with app.run_test(size=(120, 30)) as pilot:
            await wait_for(pilot, lambda: not app.running, timeout=120)
            await pilot.pause()
            table = app.query_one("#board", DataTable)
            assert str(table.get_cell("layerwise", "state")) == "not applicable"
            widths = sum(c.get_render_width(table) for c in table.columns.values())
            assert widths <= 120, widths  # every column, the verdict included, is shown
            assert str(table.get_cell("baseline", "test_acc")) != "-"
            note = str(app.query_one("#board-note", Static).render())
            assert "layerwise not applicable: " in note
            await pilot.press("q")

    asyncio.run(main())


def test_saved_runs_before_after_cycles_through_the_variants(tmp_path: Path) -> None:
    from vgdiag.plugin_api import discover_plugins

    plugins, _ = discover_plugins()
    experiment, data = tiny(epochs=1)
    runs = []
    for name, exp in (("baseline", experiment), ("adam", plugins["adam"].apply(experiment, {})),
                      ("relu", plugins["relu"].apply(experiment, {}))):
        exp = exp.replace(name=name)
        with RunStore(tmp_path / name, name=name, num_classes=data.num_classes) as store:
            assert TrainingSession(exp, data, store).run() == "completed"
        runs.append(read_run(tmp_path / name))

    async def main() -> None:
        app = build_app(run=runs[0], compare_with=runs[1:], title="compare")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            screen = app.screen
            assert isinstance(screen, CompareScreen)
            assert screen.before is app.view and app.view.name == "baseline"
            assert screen.after is not None and screen.after.name == "adam"
            await pilot.press("n")
            assert screen.after.name == "relu" and screen.after_label == "relu"
            await pilot.press("n")
            assert screen.after.name == "adam"
            await pilot.press("escape")
            assert not isinstance(app.screen, CompareScreen)
            await pilot.press("c")
            assert isinstance(app.screen, CompareScreen)
            await pilot.press("q")

    asyncio.run(main())


def test_a_model_without_activations_says_why_its_activation_plot_is_empty(
        tmp_path: Path) -> None:
    import vgdiag
    from vgdiag.tui.widgets import ActivationsPanel
    from vgdiag.tui.widgets.plot import LinePlot

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 3))  # nothing an activation reads
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=1, num_classes=3):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(4, 8)),
                                        torch.randint(0, 3, (4,))).backward()
            opt.step()

    async def main() -> None:
        app = build_app(run=read_run(tmp_path / "run"), title="view")
        async with app.run_test(size=SIZE) as pilot:
            panel = app.query_one(ActivationsPanel)
            panel.selected = "0"
            await pilot.pause()
            text = panel.query_one(LinePlot).render().plain
            assert "no activation measured after 0: the probe reads an activation module" in text
            assert "nothing to plot yet" not in text
            # Three sampled steps, histograms on every 10th: step 0's is the only one.
            hists = app.query_one(LayerHistogramsPanel)
            hists.selected = "0"
            await pilot.pause()
            said = hists.draw(app.view, "0").plain  # type: ignore[arg-type]
            assert "init: step 0 · the only histogram (taken" in said and "now:" not in said
            await pilot.press("q")

    asyncio.run(main())
