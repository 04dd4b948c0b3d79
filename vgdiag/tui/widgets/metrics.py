"""A run's headline numbers, for the before/after view."""

from __future__ import annotations

import math

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from vgdiag.engine.diagnosis import gradient_profile, verdict
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


class ComparisonTable(Chart):
    """Headline numbers of two runs, one column each."""

    DEFAULT_CSS = "ComparisonTable { height: auto; }"

    before: reactive[RunView | None] = reactive(None, layout=True)
    """The run as it was."""
    after: reactive[RunView | None] = reactive(None, layout=True)
    """The run with the fix applied."""

    def __init__(self, before_label: str, after_label: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.before_label = before_label
        self.after_label = after_label

    def render(self) -> Table:
        muted = self.style_of("chart--muted")
        grid = Table.grid(padding=(0, 2), expand=True)
        grid.add_column(style=muted, no_wrap=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        title = self.style_of("chart--title")
        grid.add_row("", Text(self.before_label, style=title), Text(self.after_label, style=title))
        sides = [metric_rows(v) if v is not None else [] for v in (self.before, self.after)]
        labels = [label for label, _ in (sides[0] or sides[1])]
        for i, label in enumerate(labels):
            cells = []
            for rows in sides:
                value = rows[i][1] if rows else "starting…"
                style: Style | str = ""
                if label == "verdict" and value != "-" and rows:
                    style = self.style_of("health--ok" if value == "healthy" else "health--bad")
                cells.append(Text(value, style=style))
            grid.add_row(label, *cells)
        return grid
