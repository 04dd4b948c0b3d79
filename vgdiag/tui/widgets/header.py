"""The header: what is training, where, how far along and how fast."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive

from vgdiag.tui.charts import fmt_duration, hbar
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import Chart

STATUS_CLASS = {
    "completed": "health--ok",
    "running": "health--ok",
    "interrupted": "health--weak",
    "paused": "health--weak",
    "stopping": "health--weak",
    "cut off": "health--weak",
    "failed": "health--bad",
}


class RunHeader(Chart):
    """Two lines: model, dataset, device and status; epoch, step, steps/s and time left."""

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""
    caption: reactive[str] = reactive("vgdiag")
    """The dashboard's title (left of the first line)."""

    def render(self) -> Table:
        view = self.view
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(justify="right", no_wrap=True)
        muted = self.style_of("chart--muted")
        title = Text(self.caption, style=self.style_of("chart--title"))
        if view is None:
            grid.add_row(title, Text("starting", style=muted))
            grid.add_row(Text("loading the model and data…", style=muted), "")
            return grid
        # The name and the data come first: a narrow terminal cuts the model spec only.
        where = Text.assemble(
            title,
            ("  " + view.name, "bold"),
            (" on ", muted),
            (view.dataset or "-", ""),
            (" · ", muted),
            (view.device or "-", ""),
            ("  " + view.model, muted),
        )
        status = view.status if view.live else f"{view.status} (saved run)"
        if view.following:
            status = f"{status} · {view.following}"
        grid.add_row(where, Text(status, style=self.style_of(STATUS_CLASS.get(view.status,
                                                                               "chart--muted"))))
        total_epochs = f"/{view.total_epochs}" if view.total_epochs else ""
        total_steps = f"/{view.total_steps}" if view.total_steps else ""
        progress = Text.assemble(
            ("epoch ", muted),
            f"{view.epoch}{total_epochs}",
            ("  step ", muted),
            f"{view.steps_done}{total_steps}",
        )
        if view.total_steps:
            progress.append("  ")
            done = min(view.steps_done / view.total_steps, 1.0)
            progress.append(hbar(done, 12), style=self.style_of("series--0"))
        if view.stage and view.stage != "train":
            progress.append(f"  stage {view.stage}", style=muted)
        rate = view.steps_per_second
        if not view.live or view.finished:
            # A rate and a time left mean nothing once the run is over: how long it took.
            took = "took" if view.status == "completed" else "ran"
            speed = Text.assemble((f"{took} ", muted), (fmt_duration(view.seconds), ""))
        else:
            speed = Text.assemble(
                (f"{rate:.0f}" if math.isfinite(rate) else "-", ""),
                (" steps/s  ", muted),
                (fmt_duration(view.seconds), ""),
                (" elapsed  ", muted),
                (fmt_duration(view.seconds_left), ""),
                (" left", muted),
            )
        grid.add_row(progress, speed)
        return grid
