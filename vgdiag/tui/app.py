"""The dashboard: a Textual app over the training event stream, and its entry points.

Training runs in a thread worker that never waits for the UI: it writes every event
to the run folder first, folds it into a RunState, and posts a coalescing
RunUpdated. The UI redraws from the latest snapshot at most 4 times a second, less
when drawing gets expensive (see pacing.py), so the dashboard costs training little
whatever the step rate.

Entry points: `run_dashboard` (train and watch) and `view_run` (a saved run folder)
build the app with `build_app`; `compare_dashboard` runs `vgdiag compare` with its
board (compare_board.py).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, VerticalScroll
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, TabbedContent, TabPane
from textual.worker import get_current_worker

from vgdiag.engine.events import Event
from vgdiag.engine.experiment import Experiment
from vgdiag.engine.splits import DataBundle
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import VariantOutcome
from vgdiag.runs.store import RunData, RunStore, free_path, read_run
from vgdiag.tui.messages import RunEnded, RunUpdated
from vgdiag.tui.pacing import RedrawPacer
from vgdiag.tui.screens.compare import CompareScreen
from vgdiag.tui.screens.fix_picker import FixChoice, FixPicker
from vgdiag.tui.screens.help import HelpScreen
from vgdiag.tui.session import TrainingSession
from vgdiag.tui.state import RunView, view_from_run
from vgdiag.tui.widgets import (
    FindingsView,
    GradientBars,
    GradientHeatmap,
    LayerHistogramsPanel,
    LayerTable,
    RunHeader,
    TrainingCurves,
)

TICK_S = 0.25  # how often the pacer is asked whether a redraw is due
WIDE_WIDTH = 120  # from here panels stand side by side
TALL_HEIGHT = 40
TABS = ("gradients", "layers", "training", "findings")
BASELINE = "baseline"


def variant_folder(run_dir: Path, plugin: str) -> Path:
    """`<run dir>-<plugin>`, numbered when that is taken already."""
    return free_path(run_dir.parent, f"{run_dir.name}-{plugin}",
                     taken=lambda path: path.exists() and any(path.iterdir()))


class VgdiagApp(App[str]):
    """The dashboard over one run (live or saved), with an optional fixed variant beside it."""

    CSS_PATH = "vgdiag.tcss"
    TITLE = "vgdiag"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit",
                tooltip="Quit (training stops first and completes its folder)"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("p,space", "toggle_pause", "Pause", tooltip="Pause or resume training"),
        Binding("f", "pick_fix", "Fix",
                tooltip="Train this run again with a mitigation plugin, beside it"),
        Binding("c", "compare", "Before/after",
                tooltip="The run and its fixed variant side by side"),
        Binding("n", "next_variant", "Next variant",
                tooltip="Before/after with the next of the saved variants"),
        Binding("s", "save_svg", "SVG",
                tooltip="Save an SVG screenshot into the run folder"),
        Binding("r", "export_report", "Report", tooltip="Write report.html into the run folder"),
        Binding("1", "show_tab('gradients')", "Gradients", show=False,
                tooltip="Gradient flow: per-layer bars and the map over time"),
        Binding("2", "show_tab('layers')", "Layers", show=False,
                tooltip="Layer table and the selected layer's histograms"),
        Binding("3", "show_tab('training')", "Training", show=False,
                tooltip="Loss and accuracy curves, train and validation"),
        Binding("4", "show_tab('findings')", "Findings", show=False,
                tooltip="The diagnosis and the fixes it recommends"),
        Binding("question_mark", "help", "Keys", tooltip="This list of keys"),
    ]

    view: reactive[RunView | None] = reactive(None)
    """The latest snapshot of the main run."""
    variant_view: reactive[RunView | None] = reactive(None)
    """The latest snapshot of the fixed variant, once one was started (or loaded)."""
    selected_layer: reactive[str | None] = reactive(None)
    """The layer the layer table's cursor is on; the histograms show it."""

    def __init__(
        self,
        *,
        session: TrainingSession | None = None,
        saved: RunView | None = None,
        saved_after: Sequence[RunView] = (),
        title: str = "vgdiag",
        plugins: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.title = title
        self.session = session
        self.saved = saved
        self.saved_after = list(saved_after)
        self.variant: TrainingSession | None = None
        self._plugins = plugins
        self._dirty: set[str] = set()  # runs with news since the last redraw
        # Per run: set by its worker when it posted RunUpdated, cleared by the redraw.
        self._unseen: dict[str, threading.Event] = defaultdict(threading.Event)
        self.pacer = RedrawPacer()
        self._quitting = False
        self._compare: CompareScreen | None = None
        self._after_index = 0

    # -- life cycle ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        header = RunHeader(id="header")
        header.caption = self.title
        yield header
        with TabbedContent(initial="gradients", id="tabs"):
            with TabPane("Gradients", id="gradients"), Container(id="gradients-body"):
                with Container(id="flow-row"):
                    with VerticalScroll(id="bars-scroll"):
                        yield GradientBars(id="bars")
                    yield GradientHeatmap(id="heatmap")
                # Shown on a tall terminal: the whole story on one screen.
                with Container(id="overview-row"):
                    yield TrainingCurves(id="overview-curves")
                    with VerticalScroll(id="overview-findings"):
                        yield FindingsView()
            with TabPane("Layers", id="layers"), Container(id="layers-body"):
                yield LayerTable(id="layer-table")
                yield LayerHistogramsPanel(id="histograms")
            with TabPane("Training", id="training"):
                yield TrainingCurves(id="curves")
            with TabPane("Findings", id="findings"), VerticalScroll(id="findings-scroll"):
                yield FindingsView(id="findings-view")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._size_classes(self.size.width, self.size.height)
        for findings in self.query(FindingsView):
            findings.can_fix = self.session is not None
        self.set_interval(TICK_S, self._redraw)
        if self.session is not None:
            self.view = self.session.state.view()
            self._unseen[BASELINE].clear()  # created here, in the UI thread
            self._train(self.session)
        elif self.saved is not None:
            self.view = self.saved
            if self.saved_after:
                self.variant_view = self.saved_after[0]
                self.action_compare()

    def on_resize(self, event: Resize) -> None:
        self._size_classes(event.size.width, event.size.height)

    def _size_classes(self, width: int, height: int) -> None:
        self.set_class(width >= WIDE_WIDTH, "-wide")
        self.set_class(height >= TALL_HEIGHT, "-tall")

    def on_unmount(self) -> None:
        # However the app ends, the workers must finish their folders, not train on.
        self.stop_training()

    def sessions(self) -> list[TrainingSession]:
        """The training runs of this dashboard: the main one and the variant, if any."""
        return [s for s in (self.session, self.variant) if s is not None]

    def stop_training(self) -> None:
        """Ask every run to stop; each still completes its run folder."""
        for session in self.sessions():
            session.stop()

    # -- the workers -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="train")
    def _train(self, session: TrainingSession) -> str:
        return self._drive(session)

    @work(thread=True, exclusive=True, exit_on_error=False, group="variant")
    def _train_variant(self, session: TrainingSession) -> str:
        try:
            return self._drive(session)
        finally:
            session.store.close()  # the dashboard opened this store, so it closes it

    def _drive(self, session: TrainingSession) -> str:
        worker = get_current_worker()
        label = session.label
        unseen = self._unseen[label]

        def notify(event: Event) -> None:
            if worker.is_cancelled:  # the app is closing: finish the folder, then stop
                session.stop()
            # At most one message per redraw: each wakes the UI thread, which then holds
            # the GIL. The redraw clears the flag before it reads the state, so no change
            # is left unseen.
            if not unseen.is_set():
                unseen.set()
                self.post_message(RunUpdated(label))

        status = session.run(notify)
        error = session.state.view().error
        self.post_message(RunEnded(label, status, error))
        return status

    def on_run_updated(self, message: RunUpdated) -> None:
        self._dirty.add(message.label)

    def on_run_ended(self, message: RunEnded) -> None:
        self._dirty.add(message.label)
        self._redraw(force=True)
        name = "training" if message.label == BASELINE else f"the {message.label} variant"
        if message.status == "failed":
            self.notify(f"{name} failed: {message.error}", severity="error", timeout=10)
        elif not self._quitting:
            self.notify(f"{name} {message.status}", timeout=4)
        if self._quitting and not any(s.running for s in self.sessions()):
            self.exit(self._result())

    def _result(self) -> str:
        if self.session is not None:
            return self.session.status or "interrupted"
        return self.saved.status if self.saved else "completed"

    def _redraw(self, force: bool = False) -> None:
        """Take fresh snapshots of the runs that changed, when the pacer allows."""
        if not self._dirty or not (force or self.pacer.due()):
            return
        dirty, self._dirty = self._dirty, set()
        for label in dirty:
            self._unseen[label].clear()
        if self.session is not None and BASELINE in dirty:
            self.view = self.session.state.view()
        if self.variant is not None and self.variant.label in dirty:
            self.variant_view = self.variant.state.view()

    # -- drawing ---------------------------------------------------------------------------

    def watch_view(self, view: RunView | None) -> None:
        if view is None:
            return
        main = self.screen_stack[0]
        # Some panels appear twice (a tall terminal shows an overview on the first tab).
        for widget in main.query("RunHeader, GradientBars, GradientHeatmap, "
                                 "LayerHistogramsPanel, TrainingCurves, FindingsView"):
            widget.view = view  # type: ignore[attr-defined]
        table = main.query_one(LayerTable)
        if main.query_one(TabbedContent).active == "layers":  # hidden: filled when shown
            table.show(view)
        names = [i.name for i in view.layers]
        if names and self.selected_layer not in names:
            self.selected_layer = table.selected_layer or names[0]
        if self._compare is not None:
            self._compare.before = view

    def watch_variant_view(self, view: RunView | None) -> None:
        if self._compare is not None:
            self._compare.after = view

    def watch_selected_layer(self, layer: str | None) -> None:
        main = self.screen_stack[0]
        main.query_one(LayerHistogramsPanel).selected = layer
        for bars in main.query(GradientBars):
            bars.selected = layer

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "layers":
            table = self.screen_stack[0].query_one(LayerTable)
            table.show(self.view)
            table.focus()  # the arrows pick a layer straight away

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.selected_layer = event.row_key.value

    # -- actions ---------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("toggle_pause", "pick_fix"):
            return self.session is not None
        if action == "compare":
            return self.variant_view is not None
        if action == "next_variant":
            return len(self.saved_after) > 1
        return True

    def action_quit(self) -> None:  # type: ignore[override]
        running = [s for s in self.sessions() if s.running]
        if not running or self._quitting:
            # A second press leaves now; the stopped workers still finish their folders.
            self.stop_training()
            self.exit(self._result())
            return
        self._quitting = True
        self.stop_training()
        self._dirty.update(s.label for s in running)
        self._redraw(force=True)
        self.notify("stopping: completing the run folder… (q again to leave at once)",
                    timeout=10)

    def action_toggle_pause(self) -> None:
        running = [s for s in self.sessions() if s.running and not s.stop_event.is_set()]
        if not running:
            return
        pause = not running[0].paused
        for session in running:
            if pause:
                session.pause()
            else:
                session.resume()
        self._dirty.update(s.label for s in running)
        self._redraw(force=True)

    def action_show_tab(self, tab: str) -> None:
        if tab in TABS:
            self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        shown = [b for b in self.BINDINGS if isinstance(b, Binding) and b.key != "ctrl+c"
                 and self.check_action(b.action.partition("(")[0], ()) is not False]
        notes = ["ctrl+c also quits.", "In the layer table, arrows or the mouse pick a layer."]
        if self.session is None:
            notes.append("This is a saved run: pausing and fixes need a live one (vgdiag run).")
        self.push_screen(HelpScreen(shown, notes))

    def run_folder(self) -> Path | None:
        """The main run's folder (live or saved)."""
        if self.session is not None:
            return Path(self.session.store.path)
        if self.saved is not None and self.saved.path:
            return Path(self.saved.path)
        return None

    def action_save_svg(self) -> None:
        folder = self.run_folder()
        if folder is None:
            self.notify("no run folder to save into", severity="warning")
            return
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = free_path(folder, f"screenshot-{stamp}", ".svg").name
        try:
            path = self.save_screenshot(filename=name, path=str(folder))
        except OSError as exc:
            self.notify(f"cannot save the screenshot: {exc.strerror or exc}", severity="error")
            return
        self.notify(f"saved {path}")

    def action_export_report(self) -> None:
        folder = self.run_folder()
        if folder is None:
            self.notify("no run folder to write the report into", severity="warning")
            return
        self._export_report(folder)

    @work(thread=True, exclusive=True, exit_on_error=False, group="report")
    def _export_report(self, folder: Path) -> None:
        message, severity = write_report(folder)
        self.call_from_thread(self.notify, message, severity=severity)

    # -- apply a fix -----------------------------------------------------------------------

    def _load_plugins(self) -> tuple[Mapping[str, Any], list[str]]:
        if self._plugins is not None:
            return self._plugins, []
        try:
            from vgdiag.plugin_api import discover_plugins
        except ImportError:
            return {}, ["the plugin system is not part of this installation"]
        plugins, errors = discover_plugins()
        return plugins, list(errors)

    def action_pick_fix(self) -> None:
        if self.session is None:
            self.notify("a saved run cannot be trained again here: use vgdiag compare",
                        severity="warning")
            return
        if self.variant is not None and self.variant.running:
            self.notify(f"the {self.variant.label} variant is still training: wait for it, "
                        "or quit", severity="warning")
            return
        plugins, errors = self._load_plugins()
        view = self.view
        recommended = {n for f in (view.findings if view else ()) for n in f.recommend}
        choices = [
            FixChoice(name, str(getattr(p, "summary", "")), self._why_not(p),
                      name in recommended)
            for name, p in plugins.items()
        ]
        self.push_screen(FixPicker(choices, errors), self._fix_chosen)

    def _why_not(self, plugin: Any) -> str | None:
        assert self.session is not None
        try:
            reason = plugin.why_not(self.session.experiment, {})
        except Exception as exc:  # a plugin's check can raise anything: show it, go on
            return f"{type(exc).__name__}: {exc}"
        return None if reason is None else str(reason)

    def _fix_chosen(self, name: str | None) -> None:
        if name is None or self.session is None:
            return
        plugins, _ = self._load_plugins()
        plugin = plugins.get(name)
        if plugin is None:
            return
        base = self.session
        try:
            experiment = plugin.apply(base.experiment, {})
            experiment = experiment.replace(name=f"{base.experiment.name}-{name}")
            store = RunStore(variant_folder(Path(base.store.path), name), name=experiment.name,
                             num_classes=base.data.num_classes)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        except Exception as exc:  # a plugin's transform can raise anything
            self.notify(f"{name} failed: {type(exc).__name__}: {exc}", severity="error",
                        timeout=8)
            return
        self.variant = TrainingSession(experiment, base.data, store, label=name)
        self.variant_view = self.variant.state.view()
        self._unseen[name].clear()  # created here, in the UI thread
        self._train_variant(self.variant)
        self.refresh_bindings()
        self.action_compare()

    def action_next_variant(self) -> None:
        if len(self.saved_after) < 2:
            return
        self._after_index = (self._after_index + 1) % len(self.saved_after)
        self.variant_view = self.saved_after[self._after_index]
        if self._compare is None:
            self.action_compare()
        else:
            self._compare.show_after(self.variant_view.name, self.variant_view)

    def action_compare(self) -> None:
        if self.variant_view is None:
            self.notify("press f to apply a fix first", severity="warning")
            return
        if self._compare is not None:
            return
        after = self.variant.label if self.variant is not None else self.variant_view.name
        before = self.view.name if self.view else "run"
        screen = CompareScreen(before, f"+ {after}" if self.variant is not None else after,
                               self.view, self.variant_view)
        self._compare = screen

        def closed(_: None) -> None:
            self._compare = None

        self.push_screen(screen, closed)


def write_report(folder: Path) -> tuple[str, str]:
    """Write report.html into `folder`; returns (message, severity) for a notification."""
    try:
        from vgdiag.runs.report import render_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "the HTML report is not part of this installation", "warning"
    try:
        content = render_report(read_run(folder), "html")
        target = folder / "report.html"
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(str(content), encoding="utf-8")
    except UserError as exc:
        return str(exc), "error"
    except OSError as exc:
        return f"cannot write the report: {exc.strerror or exc}", "error"
    except Exception as exc:  # the report must never take the dashboard down
        return f"the report failed: {type(exc).__name__}: {exc}", "error"
    return f"saved {target}", "information"


# -- factory and entry points -------------------------------------------------------------


def build_app(
    *,
    experiment: Experiment | None = None,
    data: DataBundle | None = None,
    store: RunStore | None = None,
    run: RunData | None = None,
    compare_with: Sequence[RunData] = (),
    title: str = "vgdiag",
    plugins: Mapping[str, Any] | None = None,
) -> VgdiagApp:
    """The dashboard app, for a live run (experiment, data, store) or a saved one (run).

    Args:
        experiment: the recipe to train (live mode).
        data: its data (live mode).
        store: the run folder's writer; it receives every event (live mode).
        run: a saved run folder read with `read_run` (saved mode).
        compare_with: saved runs to open beside `run` in the before/after view.
        title: shown at the top left.
        plugins: the mitigations the fix picker offers; None discovers the installed ones.
    """
    if run is not None:
        return VgdiagApp(saved=view_from_run(run),
                         saved_after=[view_from_run(r) for r in compare_with],
                         title=title, plugins=plugins)
    if experiment is None or data is None or store is None:
        raise ValueError("build_app needs experiment, data and store, or run")
    session = TrainingSession(experiment, data, store, label=BASELINE)
    return VgdiagApp(session=session, title=title, plugins=plugins)


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


def view_run(run: RunData) -> None:
    """Show a saved run folder (read with `vgdiag.store.read_run`) in the dashboard."""
    build_app(run=run, title=f"vgdiag view {run.name}").run()


def compare_dashboard(before: RunData, after: Sequence[RunData], *, title: str = "") -> None:
    """Saved runs in the before/after view: `before` against each of `after` in turn.

    n shows the next of `after`; escape goes to the dashboard of `before`, c back.
    """
    if not after:
        raise UserError("the before/after view needs at least two run folders")
    build_app(run=before, compare_with=after,
              title=title or f"vgdiag compare {before.name}").run()


def run_compare_board(
    opts: RunOptions,
    plugins: list[str],
    plugin_opts: dict[str, dict[str, str]],
    out_dir: Path,
    *,
    jobs: int = 1,
) -> list[VariantOutcome]:
    """Run `vgdiag compare` with its board open; returns the outcomes, baseline first.

    The same work as the headless path (vgdiag.compare.compare_variants), shown live:
    one row per variant, filled in as it finishes; enter opens a finished variant
    against the baseline. Quitting before the end lets the variants in training
    finish (their folders stay complete) and skips the rest, so the list may be
    shorter than asked; it always starts with the baseline when there is one.
    """
    from vgdiag.tui.compare_board import CompareApp

    app = CompareApp(opts, plugins, plugin_opts, out_dir, jobs=jobs)
    app.run()
    return app.result()
