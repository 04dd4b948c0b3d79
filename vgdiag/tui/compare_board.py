"""The comparison board: the baseline and each mitigation, filling in as they finish.

`compare_variants` (vgdiag.compare) does the work in a thread worker, exactly as the
headless `vgdiag compare` does; the board shows one row per variant, follows the
run folders of the variants in training, and opens any finished variant against
the baseline in the before/after view.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, Footer, Static

from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import BASELINE, VariantOutcome, compare_variants, comparison_rows
from vgdiag.runs.store import SUMMARY_FILE, read_run
from vgdiag.tui.charts import fmt
from vgdiag.tui.screens.compare import CompareScreen
from vgdiag.tui.screens.help import HelpScreen
from vgdiag.tui.state import view_from_run

POLL_S = 1.0  # how often the folders of variants in training are read for progress
COLUMNS = (
    ("variant", "variant"),
    ("state", "state"),
    ("val_acc", "val acc"),
    ("test_acc", "test acc"),
    ("ratio_init", "first/last @init"),
    ("ratio_end", "first/last @end"),
    ("seconds", "wall s"),
    ("verdict", "verdict"),
)


class _Stopped(Exception):
    """Raised from the progress callback to skip the variants not started yet."""


class VariantDone(Message):
    """A variant finished (trained, failed, or found not applicable). Never coalesced."""

    def __init__(self, outcome: VariantOutcome) -> None:
        super().__init__()
        self.outcome = outcome


class CompareFinished(Message):
    """compare_variants returned (or was stopped); `error` when it raised."""

    def __init__(self, error: str | None) -> None:
        super().__init__()
        self.error = error


def _progress(folder: Path) -> str:
    """'epoch 3/30' from a variant's summary.json while it trains ('' before it starts)."""
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "starting" if folder.exists() else ""
    total = sum(int(s.get("epochs", 0)) for s in config.get("stages", []) or [])
    epochs = summary.get("epochs") or []
    acc = epochs[-1].get("val_acc") if epochs else None
    shown = f"  val acc {fmt(acc, 3)}" if isinstance(acc, (int, float)) else ""
    return f"epoch {len(epochs)}/{total or '?'}{shown}"


class CompareApp(App[list[VariantOutcome]]):
    """Runs a comparison and shows it; returns the outcomes, in the baseline-first order."""

    CSS_PATH = "vgdiag.tcss"
    TITLE = "vgdiag compare"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit",
                tooltip="Quit (variants in training finish first, the rest are skipped)"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("enter", "open", "Before/after",
                tooltip="The selected variant against the baseline"),
        Binding("question_mark", "help", "Keys", tooltip="This list of keys"),
    ]

    def __init__(
        self,
        opts: RunOptions,
        plugins: list[str],
        plugin_opts: dict[str, dict[str, str]],
        out_dir: Path,
        *,
        jobs: int = 1,
        title: str = "vgdiag compare",
    ) -> None:
        super().__init__()
        self.title = title
        self.opts = opts
        self.names = [BASELINE, *plugins]
        self.plugin_opts = plugin_opts
        self.out_dir = Path(out_dir)
        self.jobs = jobs
        self.outcomes: dict[str, VariantOutcome] = {}
        self.running = False
        self.stop_requested = False
        self.error: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="board-title")
        yield DataTable(id="board", cursor_type="row", zebra_stripes=True)
        yield Static("", id="board-note", classes="muted")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        table = self.query_one("#board", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        for name in self.names:
            table.add_row(*([name, "waiting"] + ["-"] * (len(COLUMNS) - 2)), key=name)
        table.focus()
        self.running = True
        self._title()
        self.set_interval(POLL_S, self._poll)
        self._compare()

    def _title(self) -> None:
        done = len(self.outcomes)
        state = "stopping" if self.stop_requested and self.running else (
            "running" if self.running else "finished")
        self.query_one("#board-title", Static).update(
            f"{self.title}  ·  {done}/{len(self.names)} done  ·  {self.jobs} job(s)  ·  "
            f"{state}  ·  {self.out_dir}")

    # -- the work ----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare")
    def _compare(self) -> None:
        def done(outcome: VariantOutcome) -> None:
            self.post_message(VariantDone(outcome))
            # One process: the variants run one after another, so stopping here skips
            # the rest and leaves every folder that was started complete.
            if self.stop_requested and self.jobs == 1:
                raise _Stopped

        error = None
        try:
            compare_variants(self.opts, self.names[1:], self.plugin_opts, self.out_dir,
                             jobs=self.jobs, on_done=done)
        except _Stopped:
            pass
        except Exception as exc:  # shown on the board; the CLI reports what finished
            error = f"{type(exc).__name__}: {exc}"
        self.post_message(CompareFinished(error))

    def on_variant_done(self, message: VariantDone) -> None:
        outcome = message.outcome
        self.outcomes[outcome.name] = outcome
        row = comparison_rows([outcome], target_acc=1.0)[0]
        if outcome.applied:
            state = "done"
        elif outcome.run_dir is None:
            state = f"not applicable: {outcome.reason}"
        else:
            state = f"failed: {outcome.reason}"
        cells = {
            "state": state,
            "val_acc": fmt(row["val_acc"], 3),
            "test_acc": fmt(row["test_acc"], 3),
            "ratio_init": fmt(row["ratio_init"]),
            "ratio_end": fmt(row["ratio_end"]),
            "seconds": f"{outcome.seconds:.1f}",
            "verdict": str(row["verdict"] or "-"),
        }
        table = self.query_one("#board", DataTable)
        for key, value in cells.items():
            style = ""
            if key == "verdict" and outcome.applied:
                style = "bold" if value == "healthy" else ""
            table.update_cell(outcome.name, key, Text(value, style=style), update_width=True)
        self._title()

    def on_compare_finished(self, message: CompareFinished) -> None:
        self.running = False
        self.error = message.error
        note = self.query_one("#board-note", Static)
        if message.error:
            note.update(f"the comparison stopped: {message.error}")
        elif self.stop_requested:
            note.update("stopped: the variants not started were skipped")
        else:
            note.update("finished: enter opens a variant against the baseline; q quits")
        self._title()
        if self.stop_requested:
            self.exit(self.result())

    def _poll(self) -> None:
        if not self.running:
            return
        table = self.query_one("#board", DataTable)
        for name in self.names:
            if name in self.outcomes:
                continue
            progress = _progress(self.out_dir / name)
            if progress:
                table.update_cell(name, "state", progress, update_width=True)

    def result(self) -> list[VariantOutcome]:
        """The outcomes so far, baseline first, then the plugins in the order asked."""
        return [self.outcomes[n] for n in self.names if n in self.outcomes]

    # -- actions -----------------------------------------------------------------------------

    def action_quit(self) -> None:  # type: ignore[override]
        if not self.running:
            self.exit(self.result())
            return
        if self.stop_requested:
            self.notify("still finishing the variants in training; their folders must be "
                        "complete", timeout=6)
            return
        self.stop_requested = True
        self._title()
        where = ("the variant in training finishes, the rest are skipped" if self.jobs == 1
                 else "the variants already handed to the worker processes finish first")
        self.notify(f"stopping: {where}", timeout=8)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()  # the table takes enter before the app binding sees it

    def action_open(self) -> None:
        table = self.query_one("#board", DataTable)
        if not table.row_count:
            return
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        base = self.outcomes.get(BASELINE)
        chosen = self.outcomes.get(name or "")
        if base is None or base.run_dir is None:
            self.notify("the baseline has not finished yet", severity="warning")
            return
        if chosen is None or chosen.run_dir is None or name == BASELINE:
            self.notify("pick a variant that finished training", severity="warning")
            return
        try:
            before = view_from_run(read_run(base.run_dir))
            after = view_from_run(read_run(chosen.run_dir))
        except Exception as exc:  # a folder that cannot be read is shown, not fatal
            self.notify(f"cannot read the run folders: {exc}", severity="error")
            return
        self.push_screen(CompareScreen(BASELINE, f"+ {name}", before, after))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        shown = [b for b in self.BINDINGS if isinstance(b, Binding) and b.key != "ctrl+c"]
        self.push_screen(HelpScreen(shown, ["Each variant is the baseline's recipe with one "
                                            "plugin, same seed, data and budget."]))

