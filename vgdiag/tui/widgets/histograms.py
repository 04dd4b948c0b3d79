"""The selected layer's weight histogram now against at initialisation, and its log10|grad|."""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.reactive import reactive

from vgdiag.engine.records import Histogram
from vgdiag.tui.charts import column_chart, fmt, rebin
from vgdiag.tui.state import LayerHistograms, RunView
from vgdiag.tui.widgets.chart import Chart

LABEL_WIDTH = 6


def hist_std(hist: Histogram) -> float:
    """Standard deviation of the values a histogram counts (from its bin centres)."""
    counts = hist.counts.astype(np.float64)
    total = counts.sum()
    if total <= 0:
        return math.nan
    edges = hist.edges()
    centres = (edges[:-1] + edges[1:]) / 2
    mean = float((counts * centres).sum() / total)
    return float(math.sqrt(max((counts * (centres - mean) ** 2).sum() / total, 0.0)))


class LayerHistogramsPanel(Chart):
    """Two pairs of block charts on shared axes: weights (init vs now) and log10|grad|.

    Heights are comparable within a pair: both are fractions of their own total, so
    a distribution that narrowed stands taller.
    """

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""
    selected: reactive[str | None] = reactive(None)
    """The layer whose histograms are drawn."""

    def render(self) -> Text:
        view, layer = self.view, self.selected
        muted = self.style_of("chart--muted")
        if view is None or layer is None:
            return Text("select a layer in the table", style=muted)
        info = view.layer(layer)
        kind = f" · {info.kind} · {info.num_params:,} params" if info and info.kind else ""
        out = Text(no_wrap=True, overflow="crop")
        out.append(f"layer {layer or '<root>'}{kind}\n", style=self.style_of("chart--title"))
        pair = view.weight_hists.get(layer) or view.grad_hists.get(layer)
        if pair is not None:
            out.append(f"init: step {pair.init_step} · now: step {pair.now_step}\n", style=muted)
        width = max((self.size.width or 40) - LABEL_WIDTH, 8)
        # title, steps + per section: heading, init chart, now chart, axis
        rows = max(((self.size.height or 19) - 2 - 2 * 2) // 4, 1)
        for title, hists, show_std in (
            ("weights", view.weight_hists, True),
            ("log10 |grad|", view.grad_hists, False),
        ):
            pair = hists.get(layer)
            if pair is None:
                out.append(f"{title}: no histogram yet (taken every few samples)\n", style=muted)
                continue
            self._pair(out, title, pair, width, rows, show_std)
        out.rstrip()
        return out

    def _pair(self, out: Text, title: str, pair: LayerHistograms, width: int, rows: int,
              show_std: bool) -> None:
        muted = self.style_of("chart--muted")
        lo = min(pair.init.lo, pair.now.lo)
        hi = max(pair.init.hi, pair.now.hi)
        if not hi > lo:
            hi = lo + 1.0
        init = rebin(pair.init.counts, pair.init.lo, pair.init.hi, lo, hi, width)
        now = rebin(pair.now.counts, pair.now.lo, pair.now.hi, lo, hi, width)
        init /= max(init.sum(), 1.0)
        now /= max(now.sum(), 1.0)
        top = max(float(init.max(initial=0.0)), float(now.max(initial=0.0)), 1e-12)
        heading = Text(title, style=self.style_of("chart--title"))
        if show_std:
            heading.append(f"  std {fmt(hist_std(pair.init), 3)} → {fmt(hist_std(pair.now), 3)}",
                           style=muted)
        out.append_text(heading)
        out.append("\n")
        for label, values, style in (("init", init, "series--1"), ("now", now, "series--0")):
            chart = column_chart(np.append(values, top), rows)  # shared scale: one hidden bar
            for i, line in enumerate(chart):
                out.append(f"{label if i == rows - 1 else '':<{LABEL_WIDTH}}", style=muted)
                out.append(line[:-1] + "\n", style=self.style_of(style))
        left, right = f"{lo:.2g}", f"{hi:.2g}"
        out.append(" " * LABEL_WIDTH + left + right.rjust(width - len(left)) + "\n", style=muted)
