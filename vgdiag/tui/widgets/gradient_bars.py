"""Gradient flow now: one bar of log10 grad_norm per layer, coloured by health."""

from __future__ import annotations

import math

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive

from vgdiag.tui.charts import fmt, hbar, log_fraction, log_span
from vgdiag.tui.state import RunView, grad_ratios, health
from vgdiag.tui.widgets.chart import Chart

NAME_WIDTH = 12  # longer layer names are cut from the left: the tail says the most
VALUE_WIDTH = 9
VALUE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("grad", "grad"), ("ratio", "÷ output"), ("update", "update"))
MIN_BAR = 6  # narrower than this, a value column gives its room to the bar


def short_name(name: str, width: int = NAME_WIDTH) -> str:
    """A layer name that fits `width` cells ("<root>" for the model itself)."""
    name = name or "<root>"
    return name if len(name) <= width else "…" + name[-(width - 1):]


def fit_heading(step: int, width: int) -> str:
    """The bars' heading in `width` cells: words are dropped, the step number never cut."""
    for text in (f"log10 grad norm, step {step}", f"grad norm, step {step}", f"step {step}",
                 str(step)):
        if len(text) <= width:
            return text
    return str(step)


def same_layer(a: str, b: str) -> bool:
    """Whether two runs' layer names are the same layer.

    A fix that inserts a module wraps the layer as nn.Sequential(layer, new), so the
    layer itself is then called `<name>.0`.
    """
    return a == b or a == f"{b}.0" or b == f"{a}.0"


def row_order(names: list[str], partner: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """(rows matched by name to the partner run, in its order; the rest, apart).

    Without a partner every layer is matched. With one, layers both runs have come
    first in the partner's order, so row i is the same layer on both sides; the
    layers only this run has (inserted by a fix, or removed by it) follow.
    """
    if partner is None:
        return names, []
    matched: list[str] = []
    for other in partner:
        mine = next((n for n in names if same_layer(n, other) and n not in matched), None)
        if mine is not None:
            matched.append(mine)
    return matched, [n for n in names if n not in matched]


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
    partner: reactive[tuple[str, ...] | None] = reactive(None, layout=True)
    """The layer names of the run shown beside this one: rows are matched to them by name."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._columns = VALUE_COLUMNS

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
        matched, apart = row_order(names, self.partner)
        marked = set(apart)  # drawn with a "+" before the name
        label_w = min(max([len("layer"), *(len(short_name(n)) + (n in marked) for n in names)]),
                      NAME_WIDTH + 1)
        # Narrow (a side of before/after): numbers are dropped whole, update first, never cut.
        shown = VALUE_COLUMNS
        while len(shown) > 1 and width - label_w - 1 - len(shown) * VALUE_WIDTH < MIN_BAR:
            shown = shown[:-1]
        self._columns = shown
        bar_w = max(width - label_w - 1 - len(shown) * VALUE_WIDTH, 1)
        ratios = grad_ratios(record, view.layers)
        norms = [record.layers[n].grad_norm for n in names]
        lo, hi = self.scale or log_span(norms)
        out = Text(no_wrap=True, overflow="crop")
        # The heading may run into the blank left of "grad", never over it.
        heading = fit_heading(record.step, bar_w + VALUE_WIDTH - len("grad") - 1)
        values = "".join(f"{title:>{VALUE_WIDTH}}" for _, title in shown)
        out.append(f"{'layer':<{label_w}} {heading:<{bar_w}}"
                   + values[max(len(heading) - bar_w, 0):] + "\n",
                   style=self.style_of("chart--title"))
        for name in matched:
            self._row(out, view, name, ratios, label_w, bar_w, lo, hi)
        if apart:
            out.append(f"only in this run ({len(apart)}):\n", style=muted)
            for name in apart:
                self._row(out, view, name, ratios, label_w, bar_w, lo, hi, mark="+")
        axis_lo, axis_hi = f"1e{lo:.0f}", f"1e{hi:.0f}"
        if bar_w > len(axis_lo) + len(axis_hi):
            axis = axis_lo + axis_hi.rjust(bar_w - len(axis_lo))
        else:
            axis = f"{axis_lo}…{axis_hi}"
        out.append(" " * (label_w + 1) + axis, style=muted)
        return out

    def _row(self, out: Text, view: RunView, name: str, ratios: dict[str, float], label_w: int,
             bar_w: int, lo: float, hi: float, mark: str = "") -> None:
        assert view.last is not None
        stats = view.last.layers[name]
        ratio = ratios.get(name, math.nan)
        style = self.style_of(f"health--{health(ratio)}")
        label = mark + short_name(name, label_w - len(mark))
        out.append(f"{label:<{label_w}} ",
                   style=self.style_of("chart--selected") if name == self.selected else "")
        out.append(hbar(log_fraction(stats.grad_norm, lo, hi), bar_w), style=style)
        numbers: dict[str, tuple[float, Style | str]] = {
            "grad": (stats.grad_norm, ""), "ratio": (ratio, style),
            "update": (stats.update_ratio, "")}
        for key, _ in self._columns:
            value, value_style = numbers[key]
            out.append(f"{fmt(value):>{VALUE_WIDTH}}", style=value_style)
        out.append("\n")
