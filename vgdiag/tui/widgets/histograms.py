"""The selected layer's weight histogram now against at initialisation, and its log10|grad|."""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text

from vgdiag.engine.records import Histogram
from vgdiag.runs.hist_range import floor_share, occupied_range
from vgdiag.tui.charts import column_chart, fmt, rebin
from vgdiag.tui.state import LayerHistograms, RunView
from vgdiag.tui.widgets.chart import LayerChart

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


SIDE_BY_SIDE_WIDTH = 70  # from here the weights and log10|grad| stand side by side


class LayerHistogramsPanel(LayerChart):
    """Two pairs of block charts on shared axes: weights (init vs now) and log10|grad|.

    Heights are comparable within a pair: both are fractions of their own total, so
    a distribution that narrowed stands taller.
    """

    EMPTY = "select a layer in the table"

    def draw(self, view: RunView, layer: str) -> Text:
        muted = self.style_of("chart--muted")
        info = view.layer(layer)
        kind = f" · {info.kind_label} · {info.num_params:,} params" if info and info.kind else ""
        out = Text(no_wrap=True, overflow="crop")
        out.append(f"layer {layer or '<root>'}{kind}\n", style=self.style_of("chart--title"))
        pair = view.weight_hists.get(layer) or view.grad_hists.get(layer)
        if pair is not None and pair.now_step == pair.init_step:
            # One histogram so far: "now" is the init one, not the latest step.
            out.append(f"init: step {pair.init_step} · the only histogram "
                       f"{'so far ' if view.live else ''}(taken every few sampled steps)\n",
                       style=muted)
        elif pair is not None:
            out.append(f"init: step {pair.init_step} · now: step {pair.now_step}\n", style=muted)
        width = self.size.width or 40
        height = self.size.height or 19
        side = width >= SIDE_BY_SIDE_WIDTH
        column_w = (width - 2) // 2 if side else width
        # Per section: heading, init chart, now chart, axis.
        spare = height - 2 - (2 if side else 4)
        rows = max(spare // (2 if side else 4), 1)
        sections = []
        for title, hists, show_std in (
            ("weights", view.weight_hists, True),
            ("log10 |grad|", view.grad_hists, False),
        ):
            pair = hists.get(layer)
            if pair is None:
                sections.append([Text(f"{title}: no histogram yet", style=muted)])
            else:
                sections.append(self._pair(title, pair, column_w, rows, show_std))
        if side:
            left, right = sections
            for i in range(max(len(left), len(right))):
                a = left[i] if i < len(left) else Text("")
                a.truncate(column_w, pad=True)
                out.append_text(a)
                out.append("  ")
                out.append_text(right[i] if i < len(right) else Text(""))
                out.append("\n")
        else:
            for lines in sections:
                for line in lines:
                    out.append_text(line)
                    out.append("\n")
        out.rstrip()
        return out

    def _pair(self, title: str, pair: LayerHistograms, width: int, rows: int,
              show_std: bool) -> list[Text]:
        muted = self.style_of("chart--muted")
        chart_w = max(width - LABEL_WIDTH, 8)
        is_grad = not show_std
        lo, hi = occupied_range(pair.init, pair.now, skip_floor=is_grad)
        init = rebin(pair.init.counts, pair.init.lo, pair.init.hi, lo, hi, chart_w)
        now = rebin(pair.now.counts, pair.now.lo, pair.now.hi, lo, hi, chart_w)
        init /= max(init.sum(), 1.0)
        now /= max(now.sum(), 1.0)
        top = max(float(init.max(initial=0.0)), float(now.max(initial=0.0)), 1e-12)
        heading = Text(title, style=self.style_of("chart--title"))
        if show_std:
            heading.append(f"  std {fmt(hist_std(pair.init), 3)} → {fmt(hist_std(pair.now), 3)}",
                           style=muted)
        elif floor_share(pair.now) > 0 and lo > pair.now.lo:
            heading.append(f"  {floor_share(pair.now):.0%} at ≤1e{pair.now.lo:.0f}", style=muted)
        lines = [heading]
        for label, values, style in (("init", init, "series--1"), ("now", now, "series--0")):
            chart = column_chart(np.append(values, top), rows)  # shared scale: one hidden bar
            for i, line in enumerate(chart):
                text = Text(f"{label if i == rows - 1 else '':<{LABEL_WIDTH}}", style=muted)
                text.append(line[:-1], style=self.style_of(style))
                lines.append(text)
        left, right = f"{lo:.3g}", f"{hi:.3g}"
        lines.append(Text(" " * LABEL_WIDTH + left + right.rjust(chart_w - len(left)),
                          style=muted))
        return lines
