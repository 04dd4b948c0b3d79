"""Gradient flow over time: layers x sampled steps, one shaded cell per layer and time span."""

from __future__ import annotations

import numpy as np

from vgdiag.tui.state import RunView, health, output_grad_norm
from vgdiag.tui.widgets.layer_maps import LayerMap, Matrices, log10_or_nan, stat_matrix


def grad_matrix(view: RunView) -> Matrices:
    """(layer names, log10 grad_norm [records x layers], log10 ratio to output [same], steps).

    NaN where a layer was not measured or its gradient is zero or not finite.
    """
    names, grads, steps = stat_matrix(view, "grad_norm")
    outs = np.array([output_grad_norm(record, view.layers) for record in view.records])
    logs = log10_or_nan(grads)
    with np.errstate(all="ignore"):
        ratios = logs - np.log10(outs).reshape(-1, 1)
    ratios[~np.isfinite(ratios)] = np.nan
    return names, logs, ratios, steps


class GradientHeatmap(LayerMap):
    """Rows are layers (input side at the top), columns are spans of training time.

    A cell's shade is the layer's gradient norm in that span (geometric mean) on a
    log scale (· smallest, █ largest); its colour is the gradient's health relative
    to the output layer, as in the bars.
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("grad_norm", "grad norm over time", log=True, colour=health, id=id,
                         classes=classes)

    def matrices(self, view: RunView) -> Matrices:
        return grad_matrix(view)

    def waiting(self, view: RunView | None) -> str:
        waiting = view is None or (view.live and not view.finished)
        return "the gradient map fills in as training samples steps…" if waiting else ""

    def unmeasured(self, names: list[str], shown: np.ndarray) -> str | None:
        # A gradient that is zero everywhere is measured: the map shows it blank.
        return None if names else "no layers measured"
