"""A run's headline numbers, for the before/after view."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from vgdiag.diagnosis import gradient_profile, verdict
from vgdiag.tui.charts import fmt
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import Chart


def metric_rows(view: RunView) -> list[tuple[str, str]]:
    """(label, value) pairs: progress, losses, accuracies, the gradient ratio, the verdict."""
    last = view.epochs[-1] if view.epochs else None
    ratio_init = ratio_now = math.nan
    if view.records:
        ratio_init = gradient_profile(view.records[0], view.layers)["ratio"]
        ratio_now = gradient_profile(view.records[-1], view.layers)["ratio"]
    test = view.test or {}
    return [
        ("status", view.status),
        ("epoch", f"{last.epoch if last else 0}/{view.total_epochs or '-'}"),
        ("train loss", fmt(last.train_loss if last else None, 4)),
        ("val loss", fmt(last.val_loss if last else None, 4)),
        ("val acc", fmt(last.val_acc if last else None, 3)),
        ("test acc", fmt(test.get("acc"), 3)),
        ("first ÷ output grad", f"{fmt(ratio_init)} → {fmt(ratio_now)}"),
        ("verdict", verdict(view.findings) if view.epochs or view.finished else "-"),
    ]


class MetricsPanel(Chart):
    """Headline numbers of one run."""

    DEFAULT_CSS = "MetricsPanel { height: auto; }"

    view: reactive[RunView | None] = reactive(None, layout=True)
    """The run shown."""
    heading: reactive[str] = reactive("")
    """What this run is in the comparison ("before", "after: + relu")."""

    def render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style=self.style_of("chart--muted"), no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        grid.add_row(Text(self.heading, style=self.style_of("chart--title")), "")
        if self.view is None:
            grid.add_row("starting…", "")
            return grid
        for label, value in metric_rows(self.view):
            style = ""
            if label == "verdict" and value != "-":
                style = self.style_of("health--ok" if value == "healthy" else "health--bad")
            grid.add_row(label, Text(value, style=style))
        return grid
