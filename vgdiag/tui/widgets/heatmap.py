"""Gradient flow over time: layers x sampled steps, one shaded cell per layer and time span."""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.geometry import Size
from textual.reactive import reactive

from vgdiag.tui.charts import SHADES, TextBuilder, bucket, log_span, shade
from vgdiag.tui.state import RunView, health, output_grad_norm
from vgdiag.tui.widgets.chart import Chart
from vgdiag.tui.widgets.gradient_bars import NAME_WIDTH, short_name


def grad_matrix(view: RunView) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """(layer names, log10 grad_norm [records x layers], log10 ratio to output [same], steps).

    NaN where a layer was not measured or its gradient is zero or not finite.
    """
    names = [i.name for i in view.layers] or (list(view.records[-1].layers) if view.records else [])
    grads = np.full((len(view.records), len(names)), np.nan)
    outs = np.full(len(view.records), np.nan)
    for r, record in enumerate(view.records):
        outs[r] = output_grad_norm(record, view.layers)
        layers = record.layers
        grads[r] = [layers[n].grad_norm if n in layers else math.nan for n in names]
    with np.errstate(all="ignore"):
        logs = np.where(grads > 0, np.log10(grads), np.nan)
        ratios = logs - np.log10(outs)[:, None]
    logs[~np.isfinite(logs)] = np.nan
    ratios[~np.isfinite(ratios)] = np.nan
    return names, logs, ratios, [rec.step for rec in view.records]


def span_means(values: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Mean over each [start, stop) run of rows, ignoring NaN (NaN where a run has none)."""
    starts = [a for a, _ in spans]
    valid = np.isfinite(values)
    sums = np.add.reduceat(np.where(valid, values, 0.0), starts, axis=0)
    counts = np.add.reduceat(valid.astype(np.float64), starts, axis=0)
    with np.errstate(all="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


class GradientHeatmap(Chart):
    """Rows are layers (input side at the top), columns are spans of training time.

    A cell's shade is the layer's gradient norm in that span (geometric mean) on a
    log scale (· smallest, █ largest); its colour is the gradient's health relative
    to the output layer, as in the bars.
    """

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        # The matrix is rebuilt once per snapshot, not on every repaint (resize, focus).
        self._cache_key: RunView | None = None
        self._cache: tuple[list[str], np.ndarray, np.ndarray, list[int]] = (
            [], np.zeros((0, 0)), np.zeros((0, 0)), [])

    def _matrix(self, view: RunView) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
        if self._cache_key is not view:
            self._cache_key, self._cache = view, grad_matrix(view)
        return self._cache

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Auto height: the legend, one row per layer, the axis.
        view = self.view
        layers = len(view.layers) if view is not None and view.records else 0
        return layers + 2 if layers else 1

    def render(self) -> Text:
        view = self.view
        muted = self.style_of("chart--muted")
        if view is None or not view.records:
            waiting = view is None or (view.live and not view.finished)
            return Text("the gradient map fills in as training samples steps…" if waiting
                        else "", style=muted)
        names, logs, ratios, steps = self._matrix(view)
        if not names:
            return Text("no layers measured", style=muted)
        width = self.size.width or 80
        # Layers sharing a row are shown by their geometric mean, and the row says so.
        groups, labels, label_w, spans = map_rows(names, len(steps), width,
                                                  self.size.height or (len(names) + 2))
        finite = logs[np.isfinite(logs)]
        lo, hi = log_span((10.0 ** finite).tolist()) if finite.size else (-4.0, 0.0)
        layer_spans = [(a, b) for a, b in groups]
        level = (span_means(span_means(logs, spans).T, layer_spans).T - lo) / (hi - lo)
        ratio = 10.0 ** span_means(span_means(ratios, spans).T, layer_spans).T
        styles = {name: self.style_of(f"health--{name}") for name in ("bad", "weak", "ok", "none")}
        out = TextBuilder()
        legend = f"grad norm over time  {SHADES[0]} 1e{lo:.0f} … {SHADES[-1]} 1e{hi:.0f}"
        if len(groups) < len(names):
            legend += f"  ({len(names)} layers in {len(groups)} rows)"
        out.add(legend[:width] + "\n", self.style_of("chart--title"))
        for c, label in enumerate(labels):
            out.add(f"{label[-label_w:]:<{label_w}} ")
            for j in range(len(spans)):
                out.add(shade(float(level[j, c])), styles[health(float(ratio[j, c]))])
            out.add("\n")
        first, last = f"step {steps[0]}", f"step {steps[-1]}"
        axis = first + last.rjust(max(len(spans) - len(first), len(last) + 1))
        out.add(" " * (label_w + 1) + axis, muted)
        return out.text()


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
