"""What changes over training, for the HTML report (as the dashboard's Distributions,
Updates and Activations tabs show it): every layer's update/weight ratio against the
1e-3 rule of thumb, the saturated fraction of the activations, and the input- and
output-side layers' weight and log10|grad| histograms as time x value maps.
"""

from __future__ import annotations

import math

import numpy as np

from vgdiag.engine.records import Histogram, LayerInfo
from vgdiag.runs.hist_range import occupied_range
from vgdiag.runs.reader import RunData
from vgdiag.runs.svgplot import (
    Frame,
    axes,
    decade_range,
    empty_plot,
    esc,
    hline,
    line,
    log10_or_none,
    log_ticks,
    nice_ticks,
    ramp_color,
    svg_close,
    svg_open,
    text,
    tick_label,
)

# Karpathy's rule of thumb: an update about a thousandth of the weight learns at a
# healthy pace; far below it the layer barely moves, far above it training is unstable.
UPDATE_RATIO_GUIDE = 1e-3
MAP_BINS = 40  # value rows of a time x value map


def stat_over_time_svg(run: RunData, layers: list[LayerInfo], key: str, title: str, *,
                       log: bool, guide: float | None = None, guide_label: str = "",
                       width: int = 760, height: int = 300) -> str:
    """One stat of every layer against the step (dark blue: input side, orange: output)."""
    records = run.records
    steps = [float(r.step) for r in records]
    names = [i.name for i in layers]
    series = {n: [float(getattr(r.layers[n], key)) if n in r.layers else math.nan
                  for r in records] for n in names}
    if log:
        shown = {n: [log10_or_none(v) for v in vs] for n, vs in series.items()}
        span = decade_range([*(v for vs in shown.values() for v in vs),
                             log10_or_none(guide) if guide else None])
        y_range = (float(span[0]), float(span[1])) if span else None
    else:
        shown = {n: [v if math.isfinite(v) else None for v in vs] for n, vs in series.items()}
        y_range = (0.0, 1.0) if any(v is not None for vs in shown.values() for v in vs) \
            else None
    if not steps or y_range is None:
        return empty_plot(width, height, title, "not measured in this run")
    x_lo, x_hi = steps[0], max(steps[-1], steps[0] + 1)
    frame = Frame(width, height, (x_lo, x_hi), y_range, right=30)
    y_ticks = log_ticks(int(y_range[0]), int(y_range[1])) if log else \
        [(t, tick_label(t)) for t in nice_ticks(0.0, 1.0, 5)]
    parts = [svg_open(width, height, title=title, css_class="plot over-time"),
             axes(frame, x_ticks=[(t, tick_label(t)) for t in nice_ticks(x_lo, x_hi, 6)
                                  if t.is_integer()],
                  y_ticks=y_ticks, x_label="optimizer step", title=title)]
    for i, name in enumerate(names):
        if any(v is not None for v in shown[name]):
            parts.append(line(frame, steps, shown[name], color=ramp_color(i, len(names)),
                              css_class="layer-line", tooltip=name or "<root>"))
    if guide is not None:
        parts.append(hline(frame, math.log10(guide) if log else guide, color="#2b8a3e",
                           label=guide_label))
    parts.append(svg_close())
    return "".join(parts)


def hist_over_time_svg(hists: list[tuple[int, Histogram]], title: str, *, log_axis: bool,
                       width: int = 370, height: int = 200) -> str:
    """One layer's histograms as a time x value map: a column per histogram, darker = more."""
    if not hists:
        return empty_plot(width, height, title, "no histogram recorded", title_size=11)
    lo, hi = occupied_range(*(h for _, h in hists), skip_floor=log_axis)
    frame = Frame(width, height, (0.0, float(len(hists))), (lo, hi), left=52, right=8,
                  top=22, bottom=28)
    parts = [svg_open(width, height, title=title, css_class="plot hist-time"),
             text(8, 15, title, size=11, weight="600")]
    cell_h = (hi - lo) / MAP_BINS
    for c, (_, hist) in enumerate(hists):
        counts = _rebin(hist, lo, hi, MAP_BINS)
        top = counts.max(initial=0.0)
        for r in range(MAP_BINS):
            if top <= 0 or counts[r] <= 0:
                continue
            x0, x1 = frame.x(c), frame.x(c + 1)
            y1, y0 = frame.y(lo + r * cell_h), frame.y(lo + (r + 1) * cell_h)
            parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0 + 0.3:.1f}" '
                         f'height="{y1 - y0 + 0.3:.1f}" fill="#1f5fa8" '
                         f'fill-opacity="{0.1 + 0.9 * counts[r] / top:.2f}"/>')
    unit = "log10 |grad|" if log_axis else "weight"
    parts.append(text(4, frame.y(hi) + 4, f"{hi:.3g}", size=9, fill="#666"))
    parts.append(text(4, frame.y(lo), f"{lo:.3g}", size=9, fill="#666"))
    parts.append(text(frame.x(0), height - 8, f"step {hists[0][0]}", size=9, fill="#666"))
    parts.append(text(frame.x(len(hists)), height - 8, f"step {hists[-1][0]} · {unit}",
                      anchor="end", size=9, fill="#666"))
    parts.append(svg_close())
    return "".join(parts)


def _rebin(hist: Histogram, lo: float, hi: float, bins: int) -> np.ndarray:
    src = hist.edges()
    dst = np.linspace(lo, hi, bins + 1)
    out = np.zeros(bins)
    for i, c in enumerate(hist.counts):
        if c:
            overlap = np.clip(np.minimum(dst[1:], src[i + 1]) - np.maximum(dst[:-1], src[i]),
                              0.0, None)
            out += float(c) * overlap / (src[i + 1] - src[i])
    return out


def over_time_html(run: RunData, layers: list[LayerInfo]) -> str:
    """The report's section body: update ratios, saturation, distributions over time."""
    update = stat_over_time_svg(run, layers, "update_ratio", "Update ÷ weight per layer",
                                log=True, guide=UPDATE_RATIO_GUIDE,
                                guide_label=f"{UPDATE_RATIO_GUIDE:g} rule of thumb")
    saturated = stat_over_time_svg(run, layers, "act_saturated",
                                   "Saturated activations per layer", log=False)
    maps = []
    picked = [layers[0], layers[-1]] if len(layers) > 1 else list(layers)
    for info in picked:
        for kind, label in (("weight", "weights"), ("grad", "log10 |grad|")):
            hists = [(r.step, r.hists(kind)[info.name])
                     for r in run.records
                     if info.name in r.hists(kind)]
            maps.append(hist_over_time_svg(hists, f"{info.name or '<root>'}: {label}",
                                           log_axis=kind == "grad"))
    side = "the input-side and the output layer" if len(picked) > 1 else "the layer"
    return (
        '<div class="plots">\n'
        f'<figure id="update-time">{update}<figcaption>‖ΔW‖ / ‖W‖ of each optimizer step, '
        f"log scale: about {UPDATE_RATIO_GUIDE:g} learns at a healthy pace; far below, the "
        "layer barely moves.</figcaption></figure>\n"
        f'<figure id="saturation-time">{saturated}<figcaption>Fraction of sigmoid/tanh '
        "outputs at a bound, where their derivative is near 0.</figcaption></figure>\n"
        "</div>\n"
        f'<h3>Distributions over time ({esc(side)})</h3><div class="multiples hist-time">'
        + "".join(maps) + "</div>"
    )
