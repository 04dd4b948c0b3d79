"""Loss and accuracy curves, train and validation, against optimizer steps."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget

from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.plot import LinePlot, Series


def loss_series(view: RunView) -> tuple[Series, ...]:
    """Batch loss at sampled steps, epoch means of train and validation, and chance."""
    steps = tuple(float(r.step) for r in view.records)
    ends = tuple(float(e.steps) for e in view.epochs)
    series = [
        Series("batch", steps, tuple(r.loss for r in view.records), "series--2"),
        Series("train", ends, tuple(e.train_loss for e in view.epochs), "series--0"),
        Series("val", ends, tuple(e.val_loss for e in view.epochs), "series--1"),
    ]
    if view.num_classes >= 2 and (steps or ends):
        # ln(classes) is the loss of guessing: a curve lying on it has learned nothing.
        span = (min(steps + ends), max(steps + ends))
        series.append(Series("chance", span, (math.log(view.num_classes),) * 2, "series--3"))
    return tuple(series)


def accuracy_series(view: RunView) -> tuple[Series, ...]:
    ends = tuple(float(e.steps) for e in view.epochs)
    series = [
        Series("train", ends, tuple(e.train_acc for e in view.epochs), "series--0"),
        Series("val", ends, tuple(e.val_acc for e in view.epochs), "series--1"),
    ]
    if view.num_classes >= 2 and len(ends) >= 1:
        span = (0.0, max(ends))
        series.append(Series("chance", span, (1.0 / view.num_classes,) * 2, "series--3"))
    return tuple(series)


class TrainingCurves(Widget):
    """The loss plot and the accuracy plot of one run."""

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""

    def compose(self) -> ComposeResult:
        yield LinePlot("loss", classes="loss-plot")
        yield LinePlot("accuracy", y_range=(0.0, 1.0), classes="accuracy-plot")

    def on_mount(self) -> None:
        self.watch_view(self.view)

    def watch_view(self, view: RunView | None) -> None:
        if view is None:
            return
        for plot in self.query(LinePlot):  # none yet while composing
            is_loss = plot.has_class("loss-plot")
            plot.series = loss_series(view) if is_loss else accuracy_series(view)
