"""Before and after: the run and a fixed variant side by side, live while either trains."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static

from vgdiag.tui.charts import log_span
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.gradient_bars import GradientBars
from vgdiag.tui.widgets.metrics import ComparisonTable
from vgdiag.tui.widgets.plot import LinePlot, Series


def _val_series(view: RunView | None, label: str, key: str, style: str) -> Series:
    epochs = view.epochs if view else ()
    return Series(label, tuple(float(e.epoch) for e in epochs),
                  tuple(float(getattr(e, key)) for e in epochs), style)


class CompareScreen(Screen[None]):
    """Gradient profiles and headline numbers of two runs, with their validation curves."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,c", "back", "Back"),
    ]

    before: reactive[RunView | None] = reactive(None)
    """The run as it was (the baseline)."""
    after: reactive[RunView | None] = reactive(None)
    """The run with the fix applied."""

    def __init__(
        self,
        before_label: str,
        after_label: str,
        before: RunView | None = None,
        after: RunView | None = None,
    ) -> None:
        super().__init__()
        self.before_label = before_label
        self.after_label = after_label
        self._initial = (before, after)
        self._ready = False  # is_mounted turns true only after on_mount

    def compose(self) -> ComposeResult:
        yield Static(f"Before / after: {self.before_label}  vs  {self.after_label}",
                     id="compare-title")
        yield ComparisonTable("before", f"after: {self.after_label}", id="compare-table")
        with Horizontal(id="compare-sides"):
            with VerticalScroll(classes="compare-side"):
                yield GradientBars(id="before-bars")
            with VerticalScroll(classes="compare-side"):
                yield GradientBars(id="after-bars")
        with Horizontal(id="compare-plots"):
            yield LinePlot("val loss", x_label="epoch", id="compare-loss")
            yield LinePlot("val acc", x_label="epoch", y_range=(0.0, 1.0), id="compare-acc")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        # Reactives set before mounting do not survive it: the first views come this way.
        self._ready = True
        self.before, self.after = self._initial
        self._show()

    def watch_before(self) -> None:
        self._show()

    def watch_after(self) -> None:
        self._show()

    def _show(self) -> None:
        if not self._ready:
            return
        table = self.query_one(ComparisonTable)
        table.before, table.after = self.before, self.after
        # One scale for both sides, so equal bars mean equal gradients.
        norms = [s.grad_norm for v in (self.before, self.after) if v is not None and v.last
                 for s in v.last.layers.values()]
        for bars_id, view, other in (("#before-bars", self.before, self.after),
                                     ("#after-bars", self.after, self.before)):
            bars = self.query_one(bars_id, GradientBars)
            bars.scale = log_span(norms)
            # Rows matched by layer name, so row i is the same layer on both sides.
            bars.partner = tuple(i.name for i in other.layers) if other else None
            bars.view = view
        for plot_id, key in (("#compare-loss", "val_loss"), ("#compare-acc", "val_acc")):
            self.query_one(plot_id, LinePlot).series = (
                _val_series(self.before, "before", key, "series--1"),
                _val_series(self.after, "after", key, "series--0"),
            )

    def show_after(self, label: str, view: RunView | None) -> None:
        """Put another run on the "after" side (the next of several saved variants)."""
        self.after_label = label
        self.query_one("#compare-title", Static).update(
            f"Before / after: {self.before_label}  vs  {label}")
        table = self.query_one(ComparisonTable)
        table.after_label = f"after: {label}"
        table.refresh()
        self.after = view

    def action_back(self) -> None:
        self.dismiss(None)
