"""Gradient flow now: one bar of log10 grad_norm per layer, coloured by health."""

from __future__ import annotations

import math

from rich.text import Text
from textual.reactive import reactive

from vgdiag.tui.charts import fmt, hbar, log_fraction, log_span
from vgdiag.tui.state import RunView, grad_ratios, health
from vgdiag.tui.widgets.chart import Chart

NAME_WIDTH = 12  # longer layer names are cut from the left: the tail says the most
VALUE_WIDTH = 9


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A layer name that fits `width` cells ("<root>" for the model itself)."""
    name = name or "<root>"
    return name if len(name) <= width else "…" + name[-(width - 1):]


class GradientBars(Chart):
    """Per-layer bars of log10 grad_norm (input side at the top) with the update ratio beside.

    The colour is the layer's gradient relative to the output layer's: below 1e-3 it
    is effectively frozen (bad), below 1e-2 it learns 100x slower (weak).
    """

    DEFAULT_CSS = "GradientBars { height: auto; }"

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""
    selected: reactive[str | None] = reactive(None)
    """The layer picked in the layer table, marked here too."""
    scale: reactive[tuple[float, float] | None] = reactive(None)
    """log10 range of the bars; None fits this run (set one range to compare two runs)."""

    def watch_view(self, old: RunView | None, new: RunView | None) -> None:
        # The height follows the number of layers; a relayout costs more than a redraw.
        if old is None or new is None or len(old.layers) != len(new.layers):
            self.refresh(layout=True)

    def render(self) -> Text:
        view = self.view
        muted = self.style_of("chart--muted")
        record = view.last if view else None
        if view is None or record is None:
            waiting = view is None or (view.live and not view.finished)
            return Text("waiting for the first sampled step…" if waiting
                        else "this run recorded no sampled step", style=muted)
        width = self.size.width or 80
        names = [i.name for i in view.layers if i.name in record.layers] or list(record.layers)
        label_w = min(max([len("layer"), *(len(short_name(n)) for n in names)]), NAME_WIDTH)
        bar_w = max(width - label_w - 1 - 3 * VALUE_WIDTH, 4)
        ratios = grad_ratios(record, view.layers)
        norms = [record.layers[n].grad_norm for n in names]
        lo, hi = self.scale or log_span(norms)
        out = Text(no_wrap=True, overflow="crop")
        heading = f"log10 grad norm, step {record.step}"[:bar_w]
        out.append(
            f"{'layer':<{label_w}} {heading:<{bar_w}}"
            f"{'grad':>{VALUE_WIDTH}}{'÷ output':>{VALUE_WIDTH}}{'update':>{VALUE_WIDTH}}\n",
            style=self.style_of("chart--title"),
        )
        for name in names:
            stats = record.layers[name]
            ratio = ratios.get(name, math.nan)
            style = self.style_of(f"health--{health(ratio)}")
            label = short_name(name, label_w)
            out.append(f"{label:<{label_w}} ",
                       style=self.style_of("chart--selected") if name == self.selected else "")
            out.append(hbar(log_fraction(stats.grad_norm, lo, hi), bar_w), style=style)
            out.append(f"{fmt(stats.grad_norm):>{VALUE_WIDTH}}")
            out.append(f"{fmt(ratio):>{VALUE_WIDTH}}", style=style)
            out.append(f"{fmt(stats.update_ratio):>{VALUE_WIDTH}}\n")
        axis_lo, axis_hi = f"1e{lo:.0f}", f"1e{hi:.0f}"
        if bar_w > len(axis_lo) + len(axis_hi):
            axis = axis_lo + axis_hi.rjust(bar_w - len(axis_lo))
        else:
            axis = f"{axis_lo}…{axis_hi}"
        out.append(" " * (label_w + 1) + axis, style=muted)
        return out
