"""One statistic of every layer over time: layers x sampled steps, one shaded cell each.

The update/weight ratio (against the 1e-3 rule of thumb) and the saturated fraction
of the activation are drawn this way, and so is the gradient (heatmap.py), coloured
relative to the output layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive

from vgdiag.runs.report_time import UPDATE_RATIO_GUIDE
from vgdiag.tui.charts import SHADES, TextBuilder, bucket, log_span, shade
from vgdiag.tui.state import RunView
from vgdiag.tui.widgets.chart import Chart
from vgdiag.tui.widgets.gradient_bars import NAME_WIDTH, short_name

UPDATE_RATIO_OK_DECADES = 1.0  # within 10x of the guide: ok; within 100x: weak
# (layer names, the values shaded [records x layers], the values coloured [same], steps)
Matrices = tuple[list[str], np.ndarray, np.ndarray, list[int]]


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


def log10_or_nan(values: np.ndarray) -> np.ndarray:
    """log10 of the positive values, NaN elsewhere."""
    with np.errstate(all="ignore"):
        return np.where(values > 0, np.log10(values), np.nan)


def span_means(values: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Mean over each [start, stop) run of rows, ignoring NaN (NaN where a run has none)."""
    starts = [a for a, _ in spans]
    valid = np.isfinite(values)
    sums = np.add.reduceat(np.where(valid, values, 0.0), starts, axis=0)
    counts = np.add.reduceat(valid.astype(np.float64), starts, axis=0)
    with np.errstate(all="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def group_label(names: list[str], start: int, stop: int) -> str:
    """A row's label: the layer's short name, or the first one's and how many more share it."""
    first = short_name(names[start])
    return first if stop - start == 1 else f"{first} +{stop - start - 1}"


def map_rows(names: list[str], steps: int, width: int, height: int
             ) -> tuple[list[tuple[int, int]], list[str], int, list[tuple[int, int]]]:
    """How a layers x time map fills width x height: the layers of each row (more layers
    than rows: neighbours share one, and no layer is ever left out), the row labels, the
    label width, and the steps of each column."""
    rows = max(height - 2, 1)  # the legend and the axis take a line each
    groups = bucket(len(names), min(rows, len(names)))
    labels = [group_label(names, a, b) for a, b in groups]
    label_w = min(max((len(x) for x in labels), default=4), NAME_WIDTH + 3)
    return groups, labels, label_w, bucket(steps, max(width - label_w - 1, 1))


class LayerMap(Chart):
    """Rows are layers (input side at the top), columns spans of training time.

    Layers sharing a row (more layers than rows) are shown by their mean, and the
    legend says so; so are the samples sharing a column.

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
        # The matrices are rebuilt once per snapshot, not on every repaint (resize, focus).
        self._cache_key: RunView | None = None
        self._cache: Matrices = ([], np.zeros((0, 0)), np.zeros((0, 0)), [])

    def matrices(self, view: RunView) -> Matrices:
        """What is shaded and what is coloured (log10 of the stat on a log scale)."""
        names, values, steps = stat_matrix(view, self.key)
        shown = log10_or_nan(values) if self.log_scale else values
        return names, shown, shown, steps

    def waiting(self, view: RunView | None) -> str:
        return f"{self.title}: fills in as training samples steps"

    def unmeasured(self, names: list[str], shown: np.ndarray) -> str | None:
        """What is said instead of the map when there is nothing to draw (else None)."""
        if names and np.isfinite(shown).any():
            return None
        return f"{self.title}: not measured in this run"

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Auto height: the legend, one row per layer, the axis.
        view = self.view
        layers = len(view.layers) if view is not None and view.records else 0
        return layers + 2 if layers else 1

    def render(self) -> Text:
        view = self.view
        muted = self.style_of("chart--muted")
        if view is None or not view.records:
            return Text(self.waiting(view), style=muted)
        if self._cache_key is not view:
            self._cache_key, self._cache = view, self.matrices(view)
        names, shown, coloured, steps = self._cache
        nothing = self.unmeasured(names, shown)
        if nothing is not None:
            return Text(nothing, style=muted)
        width = self.size.width or 80
        groups, labels, label_w, spans = map_rows(names, len(steps), width,
                                                  self.size.height or len(names) + 2)
        level = span_means(span_means(shown, spans).T, groups).T  # [spans x groups]
        real = span_means(span_means(coloured, spans).T, groups).T
        if self.log_scale:
            finite = shown[np.isfinite(shown)]
            lo, hi = log_span((10.0 ** finite).tolist()) if finite.size else (-4.0, 0.0)
            level = (level - lo) / (hi - lo)
            real = 10.0 ** real
            scale = f"{SHADES[0]} 1e{lo:.0f} … {SHADES[-1]} 1e{hi:.0f}"
        else:
            scale = f"{SHADES[0]} 0 … {SHADES[-1]} 1"
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
