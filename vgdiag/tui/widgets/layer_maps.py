"""One statistic of every layer over time: layers x sampled steps, one shaded cell each.

The update/weight ratio (against the 1e-3 rule of thumb) and the saturated fraction
of the activation are drawn this way; the gradient has its own map (heatmap.py),
coloured relative to the output layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive

from vgdiag.runs.report_time import UPDATE_RATIO_GUIDE
from vgdiag.tui.charts import SHADES, TextBuilder, log_span, shade
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import Chart
from vgdiag.tui.widgets.heatmap import map_rows, span_means

UPDATE_RATIO_OK_DECADES = 1.0  # within 10x of the guide: ok; within 100x: weak


def update_health(ratio: float) -> str:
    """'ok', 'weak', 'bad' or 'none' for an update/weight ratio against the 1e-3 guide."""
    if not math.isfinite(ratio) or ratio <= 0:
        return "none"
    off = abs(math.log10(ratio / UPDATE_RATIO_GUIDE))
    if off <= UPDATE_RATIO_OK_DECADES:
        return "ok"
    return "weak" if off <= 2 * UPDATE_RATIO_OK_DECADES else "bad"


def saturation_health(fraction: float, limit: float = 0.3) -> str:
    """'bad' above the diagnosis' saturated fraction, 'weak' above half of it."""
    if not math.isfinite(fraction):
        return "none"
    return "bad" if fraction > limit else "weak" if fraction > limit / 2 else "ok"


def stat_matrix(view: RunView, key: str) -> tuple[list[str], np.ndarray, list[int]]:
    """(layer names, one stat [records x layers], steps); NaN where not measured."""
    names = [i.name for i in view.layers] or (list(view.records[-1].layers) if view.records else [])
    values = np.full((len(view.records), len(names)), np.nan)
    for r, record in enumerate(view.records):
        layers = record.layers
        values[r] = [getattr(layers[n], key) if n in layers else math.nan for n in names]
    values[~np.isfinite(values)] = np.nan
    return names, values, [rec.step for rec in view.records]


class LayerMap(Chart):
    """Rows are layers (input side at the top), columns spans of training time.

    Args:
        key: the LayerStats field drawn.
        title: the legend's first words.
        log: shade log10 of the value over the data's range (else 0..1 as is).
        colour: a value's health level ("ok", "weak", "bad", "none").
    """

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""

    def __init__(self, key: str, title: str, *, log: bool, colour: Callable[[float], str],
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.key = key
        self.title = title
        self.log_scale = log
        self.colour = colour
        self._cache_key: RunView | None = None
        self._cache: tuple[list[str], np.ndarray, list[int]] = ([], np.zeros((0, 0)), [])

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        view = self.view
        layers = len(view.layers) if view is not None and view.records else 0
        return layers + 2 if layers else 1

    def render(self) -> Text:
        view = self.view
        muted = self.style_of("chart--muted")
        if view is None or not view.records:
            return Text(f"{self.title}: fills in as training samples steps", style=muted)
        if self._cache_key is not view:
            self._cache_key, self._cache = view, stat_matrix(view, self.key)
        names, values, steps = self._cache
        if not names or not np.isfinite(values).any():
            return Text(f"{self.title}: not measured in this run", style=muted)
        width = self.size.width or 80
        groups, labels, label_w, spans = map_rows(names, len(steps), width,
                                                  self.size.height or len(names) + 2)
        with np.errstate(all="ignore"):
            shown = np.where(values > 0, np.log10(values), np.nan) if self.log_scale else values
        cells = span_means(span_means(shown, spans).T, groups).T  # [spans x groups]
        if self.log_scale:
            finite = shown[np.isfinite(shown)]
            lo, hi = log_span((10.0 ** finite).tolist()) if finite.size else (-4.0, 0.0)
            level = (cells - lo) / (hi - lo)
            real = 10.0 ** cells
            scale = f"{SHADES[0]} 1e{lo:.0f} … {SHADES[-1]} 1e{hi:.0f}"
        else:
            level, real, scale = cells, cells, f"{SHADES[0]} 0 … {SHADES[-1]} 1"
        styles = {h: self.style_of(f"health--{h}") for h in ("bad", "weak", "ok", "none")}
        out = TextBuilder()
        legend = f"{self.title}  {scale}"
        if len(groups) < len(names):
            legend += f"  ({len(names)} layers in {len(groups)} rows)"
        out.add(legend[:width] + "\n", self.style_of("chart--title"))
        for c, label in enumerate(labels):
            out.add(f"{label[-label_w:]:<{label_w}} ")
            for j in range(len(spans)):
                out.add(shade(float(level[j, c])), styles[self.colour(float(real[j, c]))])
            out.add("\n")
        first, last = f"step {steps[0]}", f"step {steps[-1]}"
        axis = first + last.rjust(max(len(spans) - len(first), len(last) + 1))
        out.add(" " * (label_w + 1) + axis, muted)
        return out.text()
