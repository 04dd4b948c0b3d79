"""Charts drawn from the SVG primitives: values per category on a log axis (the
gradient profile), and linear curves over a shared x axis (loss, accuracy).

They know nothing of runs: callers hand them plain numbers and labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vgdiag.runs.svgplot import (
    Frame,
    axes,
    decade_range,
    empty_plot,
    hline,
    legend_row,
    line,
    log10_or_none,
    log_ticks,
    markers,
    nice_ticks,
    shorten,
    svg_close,
    svg_open,
    tick_label,
)


def log_category_plot(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float], str, str]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 480,
    height: int = 280,
    decades: tuple[int, int] | None = None,
    css_class: str = "plot",
    line_class: str = "series",
) -> str:
    """Values per category (x, in order) on a log10 y axis, one marked line per series.

    Args:
        categories: x-axis labels, in order (long ones are shortened, full text in a tooltip).
        series: (label, one value per category, colour, dash); a dashed series has
            hollow markers. Values that are not positive and finite are left out.
        decades: (lo, hi) powers of ten for the y axis, so several plots can share it;
            values outside are drawn on the frame's edge. Default: fitted to the data.

    Returns:
        A standalone `<svg>` element, or a placeholder when nothing can be drawn.
    """
    logs = [[log10_or_none(v) for v in values] for _, values, _, _ in series]
    span = decades or decade_range(v for vs in logs for v in vs)
    if not categories or span is None:
        return empty_plot(width, height, title, "no positive, finite value to plot")
    n = len(categories)
    frame = Frame(width, height, (-0.5, n - 0.5), (float(span[0]), float(span[1])),
                  top=44, bottom=58 if n > 1 else 42)
    step = max(1, math.ceil(n / 16))
    parts = [
        svg_open(width, height, title=title or y_label, css_class=css_class),
        axes(frame,
             x_ticks=[(float(i), shorten(categories[i], 10)) for i in range(0, n, step)],
             y_ticks=log_ticks(*span), x_label=x_label, y_label=y_label, title=title,
             x_tick_rotate=-35 if n > 1 else 0),
    ]
    xs = [float(i) for i in range(n)]
    for (label, values, color, dash), ys in zip(series, logs):
        clamped = [v if v is None else min(max(v, span[0]), span[1]) for v in ys]
        tips = [f"{label} \u00b7 {c}: {v:.3g}" for c, v in zip(categories, values)]
        parts.append(line(frame, xs, clamped, color=color, dash=dash, css_class=line_class,
                          tooltip=label))
        parts.append(markers(frame, xs, clamped, color=color, hollow=bool(dash), tooltips=tips))
    parts.append(legend_row([(lbl, c, d) for lbl, _, c, d in series], frame.plot_left, 33))
    parts.append(svg_close())
    return "".join(parts)


def curves_svg(
    title: str,
    xs: Sequence[float],
    curves: Sequence[tuple[str, Sequence[float], str, str]],
    *,
    x_label: str,
    y_label: str,
    reference: tuple[float | None, str] = (None, ""),
    y_range: tuple[float, float] | None = None,
    width: int = 380,
    height: int = 260,
    empty_message: str = "no finite value to plot",
) -> str:
    """Linear curves (label, ys, colour, dash) over shared xs, with a dashed reference line."""
    ys_all = [y for _, ys, _, _ in curves for y in ys if math.isfinite(y)]
    if not xs or not ys_all:
        return empty_plot(width, height, title, empty_message)
    ref, ref_label = reference
    if y_range is None:
        lo, hi = min(ys_all), max(ys_all)
        if ref is not None and math.isfinite(ref):
            lo, hi = min(lo, ref), max(hi, ref)
        pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 0.1)
        y_range = (lo - pad, hi + pad)
    x_lo, x_hi = min(xs), max(xs)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    frame = Frame(width, height, (x_lo, x_hi), y_range, left=52, top=44)
    x_ticks = [t for t in nice_ticks(x_lo, x_hi, 6) if t.is_integer()]  # epochs and steps
    parts = [
        svg_open(width, height, title=title, css_class="plot curves"),
        axes(frame, x_ticks=[(t, tick_label(t)) for t in x_ticks],
             y_ticks=[(t, tick_label(t)) for t in nice_ticks(*y_range, 5)],
             x_label=x_label, y_label=y_label, title=title),
    ]
    if ref is not None:
        parts.append(hline(frame, ref, label=f"{ref_label} {ref:.4g}"))
    for _, ys, color, dash in curves:
        clean = [y if math.isfinite(y) else None for y in ys]
        parts.append(line(frame, xs, clean, color=color, dash=dash, css_class="curve"))
        if len(xs) <= 30:
            parts.append(markers(frame, xs, clean, color=color, radius=2.4, hollow=bool(dash)))
    parts.append(legend_row([(lbl, c, dash) for lbl, _, c, dash in curves], frame.plot_left, 33))
    parts.append(svg_close())
    return "".join(parts)
