"""The dashboard: a Textual app over one run (trained here, followed, or saved).

A worker thread never waits for the UI: it trains (session.py) or follows a folder
another process writes (following.py), folds every event into a RunState and posts
a coalescing RunUpdated. The UI redraws from the latest snapshot at most 4 times a
second, less when drawing gets expensive (pacing.py), so the dashboard costs
training little whatever the step rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, TabbedContent
from textual.worker import get_current_worker

from vgdiag.engine.status import FINAL_STATUSES, RunStatus
from vgdiag.errors import UserError
from vgdiag.runs.compare import BASELINE
from vgdiag.tui.exports import screenshot_name, write_report
from vgdiag.tui.following import FollowedRun
from vgdiag.tui.keys import DASHBOARD_KEYS, dashboard_notes, show_help
from vgdiag.tui.layout import LAYER_PANELS, RUN_PANELS, TABS, compose_tabs, size_classes
from vgdiag.tui.messages import RunEnded, RunUpdated
from vgdiag.tui.pacing import RedrawQueue
from vgdiag.tui.screens.compare import CompareScreen
from vgdiag.tui.screens.fix_picker import FixPicker
from vgdiag.tui.session import TrainingSession
from vgdiag.tui.state import RunView
from vgdiag.tui.variant import fix_choices, load_plugins, start_variant
from vgdiag.tui.widgets import FindingsView, LayerTable, RunHeader

TICK_S = 0.25  # how often the pacer is asked whether a redraw is due


class VgdiagApp(App[str]):
    """The dashboard over one run (live, followed or saved), with an optional variant beside it."""

    CSS_PATH = "vgdiag.tcss"
    TITLE = "vgdiag"
    BINDINGS: ClassVar[list[BindingType]] = DASHBOARD_KEYS

    view: reactive[RunView | None] = reactive(None)
    """The latest snapshot of the main run."""
    variant_view: reactive[RunView | None] = reactive(None)
    """The latest snapshot of the fixed variant, once one was started (or loaded)."""
    selected_layer: reactive[str | None] = reactive(None)
    """The layer the layer table's cursor is on; the histograms show it."""

    def __init__(
        self,
        main: TrainingSession | FollowedRun | RunView,
        *,
        saved_after: Sequence[RunView] = (),
        title: str = "vgdiag",
        plugins: Mapping[str, Any] | None = None,
    ) -> None:
        """`main` is a run to train here, a folder another process writes, or a saved
        run; `saved_after` are saved variants shown beside a saved run."""
        super().__init__()
        self.title = title
        self.session = main if isinstance(main, TrainingSession) else None
        self.followed = main if isinstance(main, FollowedRun) else None
        self.saved = main if isinstance(main, RunView) else None
        self.saved_after = list(saved_after)
        self.variant: TrainingSession | None = None
        self._plugins = plugins
        self.redraws = RedrawQueue()
        self._quitting = False
        self._compare: CompareScreen | None = None
        self._after_index = 0

    # -- life cycle ----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        header = RunHeader(id="header")
        header.caption = self.title
        yield header
        yield from compose_tabs()
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self._size_classes(self.size.width, self.size.height)
        for findings in self.query(FindingsView):
            findings.can_fix = self.session is not None
        self.set_interval(TICK_S, self._redraw)
        if self.session is not None:
            self.view = self.session.state.view()
            self.redraws.add(BASELINE)
            self._train(self.session)
        elif self.followed is not None:
            self.view = self.followed.state.view()
            self.redraws.add(BASELINE)
            self._follow(self.followed)
        elif self.saved is not None:
            self.view = self.saved
            if self.saved_after:
                self.variant_view = self.saved_after[0]
                self.action_compare()

    def on_resize(self, event: Resize) -> None:
        self._size_classes(event.size.width, event.size.height)

    def _size_classes(self, width: int, height: int) -> None:
        for name, on in size_classes(width, height).items():
            self.set_class(on, name)

    def on_unmount(self) -> None:
        # However the app ends, the workers must finish their folders, not train on.
        self.stop_training()
        if self.followed is not None:
            self.followed.stop()

    def sessions(self) -> list[TrainingSession]:
        """The training runs of this dashboard: the main one and the variant, if any."""
        return [s for s in (self.session, self.variant) if s is not None]

    def stop_training(self) -> None:
        """Ask every run to stop; each still completes its run folder."""
        for session in self.sessions():
            session.stop()

    # -- the workers -----------------------------------------------------------------------

    def _train(self, session: TrainingSession, *, owns_store: bool = False) -> None:
        """Train `session` in a thread worker; `owns_store`: the dashboard opened its
        store, so it closes it."""

        def train() -> str:
            try:
                return self._drive(session.label, session.run, session.stop,
                                   lambda: session.state.view().error)
            finally:
                if owns_store:
                    session.store.close()

        self.run_worker(train, thread=True, exclusive=True, exit_on_error=False,
                        group="train" if session is self.session else "variant")

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow")
    def _follow(self, followed: FollowedRun) -> str:
        return self._drive(followed.label, lambda notify: followed.run(notify), followed.stop,
                           lambda: followed.writer.detail if followed.writer else None)

    def _drive(self, label: str, run: Callable[[Callable[..., None]], str],
               stop: Callable[[], None], error: Callable[[], str | None]) -> str:
        worker = get_current_worker()
        updated = self.redraws.notifier(label, lambda: self.post_message(RunUpdated(label)))

        def notify(*_: object) -> None:
            if worker.is_cancelled:  # the app is closing: finish the folder, then stop
                stop()
            updated()

        status = run(notify)
        self.post_message(RunEnded(label, status, error()))
        return status

    def on_run_updated(self, message: RunUpdated) -> None:
        self.redraws.mark(message.label)

    def on_run_ended(self, message: RunEnded) -> None:
        self.redraws.mark(message.label)
        self._redraw(force=True)
        if self.followed is not None and message.label == BASELINE:
            if message.status == RunStatus.CUT_OFF:
                self.notify(f"the writer was cut off: {message.error}", severity="warning",
                            timeout=10)
            elif message.status in FINAL_STATUSES:
                self.notify(f"the run ended: {message.status}", timeout=6)
            return
        name = "training" if message.label == BASELINE else f"the {message.label} variant"
        if message.status == RunStatus.FAILED:
            self.notify(f"{name} failed: {message.error}", severity="error", timeout=10)
        elif not self._quitting:
            self.notify(f"{name} {message.status}", timeout=4)
        if self._quitting and not any(s.running for s in self.sessions()):
            self.exit(self._result())

    def _result(self) -> str:
        if self.session is not None:
            return self.session.status or RunStatus.INTERRUPTED
        if self.view is not None:
            return self.view.status
        return self.saved.status if self.saved else RunStatus.COMPLETED

    def _redraw(self, force: bool = False) -> None:
        """Take fresh snapshots of the runs that changed, when the pacer allows."""
        dirty = self.redraws.take(force)
        main = self.session or self.followed
        if main is not None and BASELINE in dirty:
            self.view = main.state.view()
        if self.variant is not None and self.variant.label in dirty:
            self.variant_view = self.variant.state.view()

    # -- drawing ---------------------------------------------------------------------------

    def watch_view(self, view: RunView | None) -> None:
        if view is None:
            return
        main = self.screen_stack[0]
        if not main.query(LayerTable):  # the app is closing: its screen has gone
            return
        for widget in main.query(RUN_PANELS):
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
        for widget in main.query(LAYER_PANELS):
            widget.selected = layer  # type: ignore[attr-defined]

    def action_step_layer(self, step: int) -> None:
        names = [i.name for i in self.view.layers] if self.view else []
        if not names:
            return
        at = names.index(self.selected_layer) if self.selected_layer in names else 0
        self.selected_layer = names[min(max(at + step, 0), len(names) - 1)]
        table = self.screen_stack[0].query_one(LayerTable)
        if self.selected_layer in table.rows:
            table.move_cursor(row=table.get_row_index(self.selected_layer))

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
        self.redraws.mark(*(s.label for s in running))
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
        self.redraws.mark(*(s.label for s in running))
        self._redraw(force=True)

    def action_show_tab(self, tab: str) -> None:
        if tab in TABS:
            self.query_one(TabbedContent).active = tab

    def action_help(self) -> None:
        show_help(self, dashboard_notes(followed=self.followed is not None,
                                        live=self.session is not None))

    def run_folder(self) -> Path | None:
        """The main run's folder (live, followed or saved)."""
        return Path(self.view.path) if self.view is not None and self.view.path else None

    def action_save_svg(self) -> None:
        folder = self.run_folder()
        if folder is None:
            self.notify("no run folder to save into", severity="warning")
            return
        try:
            path = self.save_screenshot(filename=screenshot_name(folder), path=str(folder))
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

    def action_pick_fix(self) -> None:
        if self.session is None:
            self.notify("a saved run cannot be trained again here: use vgdiag compare",
                        severity="warning")
            return
        if self.variant is not None and self.variant.running:
            self.notify(f"the {self.variant.label} variant is still training: wait for it, "
                        "or quit", severity="warning")
            return
        plugins, errors = load_plugins(self._plugins)
        findings = self.view.findings if self.view else ()
        self.push_screen(FixPicker(fix_choices(plugins, self.session, findings), errors),
                         self._fix_chosen)

    def _fix_chosen(self, name: str | None) -> None:
        if name is None or self.session is None:
            return
        plugin = load_plugins(self._plugins)[0].get(name)
        if plugin is None:
            return
        try:
            self.variant = start_variant(self.session, name, plugin)
        except UserError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        except Exception as exc:  # a plugin's transform can raise anything
            self.notify(f"{name} failed: {type(exc).__name__}: {exc}", severity="error",
                        timeout=8)
            return
        self.variant_view = self.variant.state.view()
        self.redraws.add(name)
        self._train(self.variant, owns_store=True)
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
