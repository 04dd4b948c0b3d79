"""What changes over training, as TensorBoard and fastai show it.

The selected layer's weight and log10|grad| distributions as time x value maps; the
update/weight ratio of every layer against the 1e-3 rule of thumb; the activations'
mean, std and saturated fraction.
"""

from __future__ import annotations

import math

import numpy as np
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget

from vgdiag.engine.diagnosis import DEFAULT_THRESHOLDS
from vgdiag.engine.records import Histogram
from vgdiag.runs.hist_range import occupied_range
from vgdiag.runs.report_time import UPDATE_RATIO_GUIDE
from vgdiag.tui.charts import TextBuilder, bucket, fmt, rebin, shade
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import LayerChart
from vgdiag.tui.widgets.layer_maps import (
    LayerMap,
    saturation_health,
    update_health,
)
from vgdiag.tui.widgets.plot import LinePlot, Series

AXIS_WIDTH = 7
SIDE_BY_SIDE_WIDTH = 100  # from here the two distribution maps stand side by side


def layer_hists(view: RunView, layer: str, kind: str) -> list[tuple[int, Histogram]]:
    """(step, histogram) of one layer over the kept records; `kind` is "weight" or "grad"."""
    out = []
    for record in view.records:
        hists = record.hists(kind)
        if layer in hists:
            out.append((record.step, hists[layer]))
    return out


def distribution_map(hists: list[tuple[int, Histogram]], width: int, rows: int,
                     skip_floor: bool) -> tuple[list[str], float, float, list[tuple[int, int]]]:
    """Rows of shade characters (top = highest value), the value range and the time spans.

    Each column is one histogram (spread over neighbouring columns when there are few),
    each cell the share of that histogram's values in the cell's value bin, relative
    to the column's fullest bin.
    """
    lo, hi = occupied_range(*(h for _, h in hists), skip_floor=skip_floor)
    spans = bucket(len(hists), width)
    columns = []
    for a, _ in spans:
        hist = hists[a][1]
        counts = rebin(hist.counts, hist.lo, hist.hi, lo, hi, rows)
        top = counts.max(initial=0.0)
        columns.append(counts / top if top > 0 else np.full(rows, np.nan))
    lines = []
    for r in range(rows - 1, -1, -1):
        lines.append("".join(shade(float(col[r])) if col[r] > 0 else " " for col in columns))
    return lines, lo, hi, spans


class DistributionMaps(LayerChart):
    """The selected layer's weight and log10|grad| histograms over time, time x value."""

    EMPTY = "select a layer (the Layers tab, or [ and ])"

    def draw(self, view: RunView, layer: str) -> Text:
        width = self.size.width or 80
        height = self.size.height or 20
        side = width >= SIDE_BY_SIDE_WIDTH
        column_w = (width - 2) // 2 if side else width
        maps = []
        for kind, title in (("weight", "weights"), ("grad", "log10 |grad|")):
            hists = layer_hists(view, layer, kind)
            rows = max((height - 1 if side else height // 2) - 2, 2)
            maps.append(self._map(title, hists, column_w, rows, skip_floor=kind == "grad"))
        out = TextBuilder()
        out.add(f"layer {layer or '<root>'} over time\n", self.style_of("chart--title"))
        if side:
            left, right = maps
            for i in range(max(len(left), len(right))):
                a = left[i] if i < len(left) else ("", "")
                b = right[i] if i < len(right) else ("", "")
                out.add(a[0].ljust(column_w)[:column_w], a[1])
                out.add("  ")
                out.add(b[0], b[1])
                out.add("\n")
        else:
            for lines in maps:
                for text, style in lines:
                    out.add(text + "\n", style)
        return out.text()

    def _map(self, title: str, hists: list[tuple[int, Histogram]], width: int, rows: int,
             skip_floor: bool) -> list[tuple[str, Style | str]]:
        muted = self.style_of("chart--muted")
        heading = self.style_of("chart--title")
        if not hists:
            return [(f"{title}: no histogram yet (taken every few samples)", muted)]
        chart_w = max(width - AXIS_WIDTH - 1, 4)
        lines, lo, hi, spans = distribution_map(hists, chart_w, rows, skip_floor)
        out: list[tuple[str, Style | str]] = [(f"{title}  ({len(hists)} histograms)", heading)]
        series = self.style_of("series--0")
        for r, line in enumerate(lines):
            label = f"{hi:.3g}" if r == 0 else f"{lo:.3g}" if r == rows - 1 else ""
            out.append((f"{label:>{AXIS_WIDTH}}┤" + line, series))
        first, last = f"step {hists[0][0]}", f"step {hists[-1][0]}"
        axis = first + last.rjust(max(len(spans) - len(first), len(last) + 1))
        out.append((" " * (AXIS_WIDTH + 1) + axis, muted))
        return out


def _series(view: RunView, layer: str, key: str, label: str, style: str,
            log: bool = False) -> Series:
    xs, ys = [], []
    for record in view.records:
        stats = record.layers.get(layer)
        if stats is None:
            continue
        value = float(getattr(stats, key))
        if log:
            value = math.log10(value) if math.isfinite(value) and value > 0 else math.nan
        xs.append(float(record.step))
        ys.append(value)
    return Series(label, tuple(xs), tuple(ys), style)


class _LayerOverTime(Widget):
    """A map of every layer over time above a plot of the selected layer: redrawn
    whenever the run or the selection changes."""

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""
    selected: reactive[str | None] = reactive(None)
    """The layer whose lines are drawn."""

    def on_mount(self) -> None:
        self.watch(self, "view", self._show, init=False)
        self.watch(self, "selected", self._show)  # and draws now

    def _show(self) -> None:
        view = self.view
        if not self.is_mounted or view is None:
            return
        self.query_one(LayerMap).view = view
        self.plot(self.query_one(LinePlot), view, self.selected)

    def plot(self, plot: LinePlot, view: RunView, layer: str | None) -> None:
        """Draw `layer` of `view` (None: no layer selected yet) into `plot`."""
        raise NotImplementedError


class UpdatesPanel(_LayerOverTime):
    """Every layer's update/weight ratio over time, and the selected layer's against 1e-3."""

    def compose(self) -> ComposeResult:
        yield LayerMap("update_ratio", f"update ÷ weight over time (≈{fmt(UPDATE_RATIO_GUIDE)} "
                       "is healthy)", log=True, colour=update_health, classes="over-time-map")
        yield LinePlot("log10 update ÷ weight", classes="over-time-plot")

    def plot(self, plot: LinePlot, view: RunView, layer: str | None) -> None:
        plot.title = f"log10 update ÷ weight, layer {layer}" if layer else plot.title
        if layer is None or not view.records:
            plot.series = ()
            return
        line = _series(view, layer, "update_ratio", layer, "series--0", log=True)
        guide = math.log10(UPDATE_RATIO_GUIDE)
        span = (line.xs[0], line.xs[-1]) if line.xs else (0.0, 1.0)
        plot.series = (line, Series(f"{fmt(UPDATE_RATIO_GUIDE)} rule of thumb", span,
                                    (guide, guide), "series--3"))


class ActivationsPanel(_LayerOverTime):
    """Every layer's saturated fraction over time; the selected one's mean, std, saturation."""

    def compose(self) -> ComposeResult:
        limit = DEFAULT_THRESHOLDS.saturated_fraction
        yield LayerMap("act_saturated", "saturated activations over time", log=False,
                       colour=lambda f: saturation_health(f, limit), classes="over-time-map")
        yield LinePlot("activation", classes="over-time-plot")

    def plot(self, plot: LinePlot, view: RunView, layer: str | None) -> None:
        if layer is None:
            plot.empty = "nothing to plot yet"
            plot.series = ()
            return
        plot.title = f"activation after {layer}"
        measured = any(math.isfinite(getattr(r.layers[layer], "act_mean", math.nan))
                       for r in view.records if layer in r.layers)
        plot.empty = ("nothing to plot yet" if measured or not view.records else
                      f"no activation measured after {layer}: the probe reads an "
                      "activation module (nn.ReLU, nn.Tanh...) or a call such as F.relu "
                      "that follows a layer")
        plot.series = (
            _series(view, layer, "act_mean", "mean", "series--0"),
            _series(view, layer, "act_std", "std", "series--1"),
            _series(view, layer, "act_saturated", "saturated", "series--3"),
        )


def time_grad_series(view: RunView) -> tuple[Series, ...]:
    """log10 ||dLoss/dx_t|| against the time step t, per recurrent module, latest sample."""
    last = next((r for r in reversed(view.records) if r.time_grad), None)
    if last is None:
        return ()
    styles = ("series--0", "series--1", "series--3", "series--2")
    out = []
    for i, (name, values) in enumerate(list(last.time_grad.items())[:len(styles)]):
        ys = tuple(math.log10(v) if math.isfinite(v) and v > 0 else math.nan for v in values)
        out.append(Series(name or "<root>", tuple(float(t) for t in range(len(ys))), ys,
                          styles[i]))
    return tuple(out)


class TimeGradPlot(LinePlot):
    """The gradient through time of recurrent modules: does dLoss/dx_t fade toward t = 0?"""

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("log10 |dLoss/dx_t| through time", x_label="t", id=id)
        self.display = False

    def watch_view(self, view: RunView | None) -> None:
        self.series = time_grad_series(view) if view is not None else ()
        # Only recurrent models have a profile: the panel is hidden otherwise.
        self.display = bool(self.series)
