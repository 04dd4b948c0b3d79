"""The comparison board: the baseline and each mitigation, live as they train.

The one compare engine (vgdiag.runs.compare.compare_variants) runs in a thread
worker, exactly as the headless `vgdiag compare` runs it; its progress callback posts
messages (coalesced per variant) and its outcomes post lifecycle messages (never
coalesced). The board shows one row per variant, every variant's validation accuracy
and loss on shared axes, and opens any finished variant against the baseline.
Quitting once starts no new variant and lets those in training finish; quitting
again, or Ctrl-C at any time (as in the headless compare), interrupts them (their
folders are marked interrupted).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import (
    BASELINE,
    VariantOutcome,
    VariantProgress,
    VariantSpec,
    VariantState,
    compare_variants,
)
from vgdiag.runs.compare_table import variant_row, verdict_text
from vgdiag.runs.reader import read_run
from vgdiag.tui.charts import fmt
from vgdiag.tui.keys import HELP_KEY, quit_keys, show_help
from vgdiag.tui.screens.compare import CompareScreen
from vgdiag.tui.state import view_from_run
from vgdiag.tui.widgets.plot import LinePlot, Series

COLUMNS = (
    ("variant", "variant"),
    ("state", "state"),
    ("epoch", "epoch"),
    ("val_acc", "val acc"),
    ("test_acc", "test acc"),
    ("steps", "steps"),
    # first/last layer gradient ratio, named in the board's title line: short headers
    # keep every number on an 80-column screen
    ("ratio_init", "@init"),
    ("ratio_end", "@end"),
    ("eta", "ETA s"),
    ("verdict", "verdict"),
)
SERIES_STYLES = 4  # series--0..3 in the stylesheet


class VariantProgressed(Message):
    """A variant's progress (an epoch ended); a newer one replaces an older one."""

    def __init__(self, progress: VariantProgress) -> None:
        super().__init__()
        self.progress = progress

    def can_replace(self, message: Message) -> bool:
        return (isinstance(message, VariantProgressed)
                and message.progress.name == self.progress.name
                and message.progress.epoch == self.progress.epoch)


class VariantDone(Message):
    """A variant finished (trained, failed, stopped or not applicable). Never coalesced."""

    def __init__(self, outcome: VariantOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class CompareFinished(Message):
    """The engine returned; `error` when it raised."""

    def __init__(self, error: str | None, outcomes: list[VariantOutcome]) -> None:
        super().__init__()
        self.error = error
        self.outcomes = outcomes


class CompareApp(App[list[VariantOutcome]]):
    """Runs a comparison and shows it; returns the outcomes of the variants that ran."""

    CSS_PATH = "vgdiag.tcss"
    TITLE = "vgdiag compare"
    BINDINGS: ClassVar[list[BindingType]] = [
        *quit_keys("Quit (once: start no new variant; twice, or ctrl+c: interrupt those "
                   "training)", ctrl_c="interrupt"),
        Binding("enter", "open", "Before/after",
                tooltip="The selected variant against the baseline"),
        HELP_KEY,
    ]

    def __init__(
        self,
        opts: RunOptions,
        specs: list[VariantSpec],
        out_dir: Path = Path("runs/compare"),
        *,
        jobs: int = 1,
        title: str = "vgdiag compare",
    ) -> None:
        super().__init__()
        self.title = title
        self.opts = opts
        self.specs = list(specs)
        self.names = [s.name for s in self.specs]
        self.out_dir = Path(out_dir)
        self.jobs = jobs
        self.outcomes: dict[str, VariantOutcome] = {}
        self.curves: dict[str, list[tuple[int, float, float]]] = {n: [] for n in self.names}
        self.no_new = threading.Event()
        self.stop = threading.Event()
        self.running = False
        self.error: str | None = None
        self.status_note = ""
        self.reasons: dict[str, str] = {}  # variant: why it did not apply, or failed
        self.exception: BaseException | None = None  # what the engine raised, if anything
        if jobs > 1:
            from vgdiag.runs.compare_workers import prepare_for_workers

            prepare_for_workers()  # before Textual owns stderr (see its docstring)

    @property
    def stop_requested(self) -> bool:
        return self.no_new.is_set()

    @property
    def interrupted(self) -> bool:
        return self.no_new.is_set() or self.stop.is_set()

    def compose(self) -> ComposeResult:
        yield Static(id="board-title")
        yield DataTable(id="board", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="board-plots"):
            yield LinePlot("val acc", x_label="epoch", y_range=(0.0, 1.0), id="board-acc")
            yield LinePlot("val loss", x_label="epoch", id="board-loss")
        yield Static("", id="board-note", classes="muted")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#board", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for name in self.names:
            table.add_row(*([name, VariantState.WAITING.value] + ["-"] * (len(COLUMNS) - 2)),
                          key=name)
        table.focus()
        self.running = True
        self._title()
        self._compare()

    def _title(self) -> None:
        done = len(self.outcomes)
        state = ("stopping" if self.interrupted and self.running else
                 "running" if self.running else "finished")
        self.query_one("#board-title", Static).update(
            f"{self.title}  ·  {done}/{len(self.names)} done  ·  {self.jobs} job(s)  ·  "
            f"{state}  ·  {self.out_dir}  ·  @init, @end: the first layer's gradient over "
            "the output layer's")

    # -- the work ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare")
    def _compare(self) -> None:
        def progressed(progress: VariantProgress) -> None:
            self.post_message(VariantProgressed(progress))

        def done(outcome: VariantOutcome) -> None:
            self.post_message(VariantDone(outcome))

        error, outcomes = None, list[VariantOutcome]()
        try:
            outcomes = compare_variants(
                self.opts, self.specs, self.out_dir, jobs=self.jobs,
                on_progress=progressed, on_done=done,
                stop_event=self.stop, no_new_event=self.no_new)
        except Exception as exc:  # shown on the board; the CLI reports what finished
            error = f"{type(exc).__name__}: {exc}"
            self.exception = exc
        self.post_message(CompareFinished(error, outcomes))

    def on_variant_progressed(self, message: VariantProgressed) -> None:
        p = message.progress
        table = self.query_one("#board", DataTable)
        eta = p.eta_s
        cells = {"state": p.state.value,
                 "epoch": f"{p.epoch}/{p.total_epochs}" if p.total_epochs else "-",
                 "val_acc": fmt(p.val_acc, 3), "eta": "-" if eta is None else f"{eta:.0f}"}
        for key, value in cells.items():
            table.update_cell(p.name, key, value, update_width=True)
        if p.epoch and p.val_acc is not None and p.val_loss is not None:
            curve = self.curves.setdefault(p.name, [])
            if not curve or curve[-1][0] != p.epoch:
                curve.append((p.epoch, p.val_acc, p.val_loss))
                self._plots()

    def _note(self) -> None:
        """Below the plots: how the comparison stands, then why a variant did not train."""
        lines = [self.status_note, *self.reasons.values()]
        self.query_one("#board-note", Static).update("\n".join(x for x in lines if x))

    def _plots(self) -> None:
        for plot_id, index in (("#board-acc", 1), ("#board-loss", 2)):
            self.query_one(plot_id, LinePlot).series = tuple(
                Series(name, tuple(float(c[0]) for c in curve),
                       tuple(float(c[index]) for c in curve),
                       f"series--{i % SERIES_STYLES}")
                for i, (name, curve) in enumerate(self.curves.items()) if curve)

    def on_variant_done(self, message: VariantDone) -> None:
        outcome = message.outcome
        self.outcomes[outcome.name] = outcome
        row = variant_row(outcome, target_acc=1.0)
        if outcome.reason and outcome.state in (VariantState.NOT_APPLICABLE,
                                                VariantState.FAILED):
            # Below the table: in a cell, a sentence would widen the state column until
            # the numbers' columns left the screen.
            self.reasons[outcome.name] = f"{outcome.name} {outcome.state.value}: {outcome.reason}"
            self._note()
        cells = {
            "state": outcome.state.value,
            "val_acc": fmt(row["val_acc"], 3),
            "test_acc": fmt(row["test_acc"], 3),
            "steps": str(row["steps"] or "-"),
            "ratio_init": fmt(row["ratio_init"]),
            "ratio_end": fmt(row["ratio_end"]),
            "eta": "-",
            "verdict": (outcome.state.value if outcome.name in self.reasons
                        else verdict_text(row) or "-"),
        }
        table = self.query_one("#board", DataTable)
        for key, value in cells.items():
            style = "bold" if key == "verdict" and value.startswith("learned") else ""
            table.update_cell(outcome.name, key, Text(value, style=style), update_width=True)
        self._title()

    def on_compare_finished(self, message: CompareFinished) -> None:
        self.running = False
        self.error = message.error
        for outcome in message.outcomes:
            if outcome.state is VariantState.SKIPPED:
                self.query_one("#board", DataTable).update_cell(
                    outcome.name, "state", VariantState.SKIPPED.value)
        if message.error:
            self.status_note = f"the comparison stopped: {message.error}"
        elif self.interrupted:
            self.status_note = "stopped: the variants not started were skipped"
        else:
            self.status_note = "finished: enter opens a variant against the baseline; q quits"
        self._note()
        self._title()
        if self.interrupted:
            self.exit(self.result())

    def result(self) -> list[VariantOutcome]:
        """The outcomes so far, in the order of the variants."""
        return [self.outcomes[n] for n in self.names if n in self.outcomes]

    # -- actions -----------------------------------------------------------------------------

    def action_quit(self) -> None:  # type: ignore[override]
        if not self.running:
            self.exit(self.result())
            return
        if self.no_new.is_set():
            self.stop.set()
            self.notify("interrupting the variants in training", timeout=6)
            return
        self.no_new.set()
        self._title()
        self.notify("stopping: the variants in training finish, no other starts; "
                    "q again interrupts them", timeout=8)

    def action_interrupt(self) -> None:
        """Ctrl-C: the running variants stop now, marked interrupted; none starts."""
        if not self.running:
            self.exit(self.result())
            return
        self.no_new.set()
        self.stop.set()
        self._title()
        self.notify("interrupting the variants in training", timeout=6)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()  # the table takes enter before the app binding sees it

    def action_open(self) -> None:
        table = self.query_one("#board", DataTable)
        if not table.row_count:
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        base = next((o for o in self.outcomes.values() if o.spec.group == BASELINE), None)
        chosen = self.outcomes.get(name or "")
        if base is None or base.run_dir is None:
            self.notify("the baseline has not finished yet", severity="warning")
            return
        if chosen is None or chosen.run_dir is None or chosen.spec.group == BASELINE:
            self.notify("pick a variant that finished training", severity="warning")
            return
        try:
            before = view_from_run(read_run(base.run_dir))
            after = view_from_run(read_run(chosen.run_dir))
        except Exception as exc:  # a folder that cannot be read is shown, not fatal
            self.notify(f"cannot read the run folders: {exc}", severity="error")
            return
        self.push_screen(CompareScreen(base.name, f"+ {name}", before, after))

    def action_help(self) -> None:
        show_help(self, ["Each variant is the baseline's recipe with one plugin, same split, "
                         "seeds and epochs; the steps and samples columns say what each "
                         "saw (layerwise trains at least one epoch per stage)."])


def run_board(opts: RunOptions, specs: list[VariantSpec], out_dir: Path, *,
              jobs: int = 1) -> tuple[list[VariantOutcome], bool]:
    """Run the comparison with its board open: (outcomes, whether it was stopped).

    Every spec gets an outcome (SKIPPED for those never started); an error the engine
    raised is raised again here, after the board closed, so it keeps its traceback.
    """
    app = CompareApp(opts, specs, out_dir=out_dir, jobs=jobs)
    app.run()
    if app.exception is not None:
        raise app.exception
    by_name = {o.name: o for o in app.result()}
    outcomes = [by_name.get(s.name) or VariantOutcome(s, VariantState.SKIPPED) for s in specs]
    return outcomes, app.interrupted
