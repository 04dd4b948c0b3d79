"""Gradient flow over time: layers x sampled steps, one shaded cell per layer and time span."""

from __future__ import annotations

import math
import warnings

import numpy as np
from rich.text import Text
from textual.reactive import reactive

from vgdiag.tui.charts import SHADES, bucket, log_fraction, log_span, shade
from vgdiag.tui.state import RunView, health, output_grad_norm
from vgdiag.tui.widgets.chart import Chart
from vgdiag.tui.widgets.gradient_bars import NAME_WIDTH, short_name


def grad_matrix(view: RunView) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
    """(layer names, grad_norm [records x layers], ratio to output [same], steps)."""
    names = [i.name for i in view.layers] or (list(view.records[-1].layers) if view.records else [])
    grads = np.full((len(view.records), len(names)), np.nan)
    ratios = np.full_like(grads, np.nan)
    for r, record in enumerate(view.records):
        out = output_grad_norm(record, view.layers)
        for c, name in enumerate(names):
            stats = record.layers.get(name)
            if stats is not None:
                grads[r, c] = stats.grad_norm
                if math.isfinite(out) and out > 0:
                    ratios[r, c] = stats.grad_norm / out
    return names, grads, ratios, [rec.step for rec in view.records]


class GradientHeatmap(Chart):
    """Rows are layers (input side at the top), columns are spans of training time.

    A cell's shade is the layer's median gradient norm in that span on a log scale
    (· smallest, █ largest); its colour is the gradient's health relative to the
    output layer, as in the bars.
    """

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        # The matrix is rebuilt once per snapshot, not on every repaint (resize, focus).
        self._cache_key: RunView | None = None
        self._cache: tuple[list[str], np.ndarray, np.ndarray, list[int]] = ([], np.zeros(0),
                                                                           np.zeros(0), [])

    def _matrix(self, view: RunView) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
        if self._cache_key is not view:
            self._cache_key, self._cache = view, grad_matrix(view)
        return self._cache

    def render(self) -> Text:
        view = self.view
        muted = self.style_of("chart--muted")
        if view is None or not view.records:
            return Text("the gradient map fills in as training samples steps…", style=muted)
        names, grads, ratios, steps = self._matrix(view)
        width = self.size.width or 80
        height = self.size.height or (len(names) + 3)
        label_w = min(max((len(short_name(n)) for n in names), default=4), NAME_WIDTH)
        columns = max(width - label_w - 1, 1)
        spans = bucket(len(steps), columns)
        lo, hi = log_span(grads[np.isfinite(grads)].tolist())
        out = Text(no_wrap=True, overflow="crop")
        legend = f"grad norm over time  {SHADES[0]} 1e{lo:.0f} … {SHADES[-1]} 1e{hi:.0f}"
        out.append(legend + "\n", style=self.style_of("chart--title"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN spans are expected
            med_g = np.stack([np.nanmedian(grads[a:b], axis=0) for a, b in spans])
            med_r = np.stack([np.nanmedian(ratios[a:b], axis=0) for a, b in spans])
        shown = names[: max(height - 2, 1)]
        # Spare height makes each layer a band of up to 3 rows: easier on the eye.
        band = min(max((height - 2) // max(len(shown), 1), 1), 3)
        for c, name in enumerate(shown):
            cells = [
                (shade(log_fraction(float(med_g[j, c]), lo, hi)),
                 self.style_of(f"health--{health(float(med_r[j, c]))}"))
                for j in range(len(spans))
            ]
            for row in range(band):
                label = short_name(name, label_w) if row == band // 2 else ""
                out.append(f"{label:<{label_w}} ")
                for text, style in cells:
                    out.append(text, style=style)
                out.append("\n")
        first, last = f"step {steps[0]}", f"step {steps[-1]}"
        used = len(spans)
        axis = first + last.rjust(max(used - len(first), len(last) + 1))
        out.append(" " * (label_w + 1) + axis, style=muted)
        return out
