"""The report's plots of a run: the gradient profile (init vs last; several can share
one axis), every layer's gradient norm over training, and a layer's histograms.

Built from the SVG primitives and charts; every label from the user's model is escaped
there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vgdiag.engine.records import Histogram, LayerInfo, StepRecord
from vgdiag.runs.hist_range import occupied_range
from vgdiag.runs.reader import RunData
from vgdiag.runs.report_data import ReportData, grad_norm_series, ordered_layers
from vgdiag.runs.svgcharts import log_category_plot
from vgdiag.runs.svgplot import (
    Frame,
    axes,
    decade_label,
    decade_range,
    empty_plot,
    legend,
    line,
    log10_or_none,
    log_ticks,
    markers,
    nice_ticks,
    ramp_color,
    shorten,
    step_histogram,
    svg_close,
    svg_open,
    text,
    tick_label,
)

INIT_COLOR, LAST_COLOR = "#8a8a8a", "#c0392b"
LEGEND_ROWS = 18  # more layers than this: the legend names a spread of them


def gradient_profile_svg(
    source: RunData | Sequence[StepRecord],
    layers: Sequence[LayerInfo] | None = None,
    *,
    title: str = "",
    width: int = 480,
    height: int = 280,
    decades: tuple[int, int] | None = None,
) -> str:
    """log10 grad_norm against layer depth at initialisation and at the last sampled step.

    The plot that shows a vanishing gradient at a glance: a line falling toward the
    input side. Several of these side by side compare runs; give them the same
    `decades` (see `gradient_profile_range`) so their y axes match.

    Args:
        source: a RunData, or sampled records in step order (the first is "init").
        layers: layer order and names; default: the run's layers, else the first
            record's layer names in order.
        title: shown above the plot (escaped).
        width, height: size in pixels.
        decades: (lo, hi) powers of ten for the y axis; default: fitted to the data.

    Returns:
        A standalone `<svg>` element. NaN, infinite, zero and negative norms are left
        out (a log axis cannot show them); with no records it says so.
    """
    records, names = _profile_inputs(source, layers)
    if not records or not names:
        return empty_plot(width, height, title, "no gradients were recorded")
    first, last = records[0], records[-1]
    series = [(f"init (step {first.step})", [_grad(first, n) for n in names], "#9a9a9a", "5 3")]
    if last is not first:
        series.append((f"last (step {last.step})", [_grad(last, n) for n in names], "#c0392b", ""))
    return log_category_plot(
        [n or "<root>" for n in names],
        series,
        title=title,
        x_label="layer (input \u2192 output)",
        y_label="grad norm (log)",
        width=width,
        height=height,
        decades=decades,
        css_class="plot profile",
        line_class="profile-line",
    )


def gradient_profile_range(
    *sources: RunData | Sequence[StepRecord],
) -> tuple[int, int] | None:
    """The decades that cover every run's profile, for plots that must share an axis."""
    values: list[float | None] = []
    for source in sources:
        records, names = _profile_inputs(source, None)
        if records:
            for rec in (records[0], records[-1]):
                values += [log10_or_none(_grad(rec, n)) for n in names]
    return decade_range(values)


def _profile_inputs(
    source: RunData | Sequence[StepRecord], layers: Sequence[LayerInfo] | None
) -> tuple[list[StepRecord], list[str]]:
    if isinstance(source, RunData):
        records = list(source.records)
        ordered = list(layers) if layers is not None else ordered_layers(source)
    else:
        records = list(source)
        ordered = list(layers) if layers is not None else []
    names = [i.name for i in sorted(ordered, key=lambda i: i.depth)]
    if not names and records:
        names = list(records[0].layers) + [
            n for n in records[-1].layers if n not in records[0].layers
        ]
    return records, names


def _grad(record: StepRecord, name: str) -> float:
    s = record.layers.get(name)
    return float(s.grad_norm) if s is not None else math.nan


def grad_norm_time_svg(d: ReportData, width: int = 760, height: int = 340) -> str:
    """grad_norm of every layer against the step, log scale, one path per layer."""
    title = "Gradient norm per layer"
    steps, series = grad_norm_series(d.run, max_points=width)  # a point per pixel at most
    logs = {n: [log10_or_none(v) for v in vs] for n, vs in series.items()}
    span = decade_range(v for vs in logs.values() for v in vs)
    if not steps or span is None:
        return empty_plot(width, height, title, "no positive, finite gradient norm was recorded")
    x_lo, x_hi = float(steps[0]), float(max(steps[-1], steps[0] + 1))
    frame = Frame(width, height, (x_lo, x_hi), (float(span[0]), float(span[1])), right=180)
    parts = [
        svg_open(width, height, title=title, css_class="plot grad-time"),
        axes(frame,
             x_ticks=[(t, tick_label(t)) for t in nice_ticks(x_lo, x_hi, 6) if t.is_integer()],
             y_ticks=log_ticks(*span),
             x_label="optimizer step", y_label="grad norm (log)", title=title),
    ]
    names = list(series)
    xs = [float(s) for s in steps]
    entries = []
    for i, name in enumerate(names):
        color = ramp_color(i, len(names))
        label = name or "<root>"
        if any(v is not None for v in logs[name]):
            parts.append(line(frame, xs, logs[name], color=color, css_class="layer-line",
                              tooltip=label))
            if len(xs) == 1:
                parts.append(markers(frame, xs, logs[name], color=color))
        else:
            label += " (no data)"
        entries.append((label, color, ""))
    if len(entries) > LEGEND_ROWS:
        pick = sorted({round(k * (len(entries) - 1) / (LEGEND_ROWS - 2))
                       for k in range(LEGEND_ROWS - 1)})
        entries = [entries[k] for k in pick]
        parts.append(text(frame.plot_right + 12, height - 8,
                          f"{len(names)} layers; {len(entries)} named", size=10, fill="#777"))
    parts.append(legend(entries, frame.plot_right + 12, frame.plot_top + 6, max_label=22))
    parts.append(svg_close())
    return "".join(parts)


def histogram_svg(
    name: str, hists: Sequence[Histogram | None], *, log_axis: bool = False,
    width: int = 220, height: int = 120,
) -> str:
    """One layer's histograms overlaid (first grey, last red), as densities on a shared x range."""
    label = name or "<root>"
    present = [(h, c) for h, c in zip(hists, (INIT_COLOR, LAST_COLOR))
               if h is not None and int(h.counts.sum()) > 0]
    short = shorten(label, 30)
    if not present:
        return empty_plot(width, height, short, "not recorded", title_size=11)
    # The axis the data needs, not the probe's fixed log10|grad| range.
    lo, hi = occupied_range(*(h for h, _ in present), skip_floor=log_axis)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return empty_plot(width, height, short, "no range", title_size=11)
    shapes = []
    for h, color in present:
        all_edges = h.edges()
        width_bin = (h.hi - h.lo) / len(h.counts) or 1.0
        inside = [i for i in range(len(h.counts))
                  if all_edges[i + 1] > lo + 1e-12 and all_edges[i] < hi - 1e-12]
        if not inside:
            continue
        edges = [float(all_edges[i]) for i in inside] + [float(all_edges[inside[-1] + 1])]
        # Densities, so histograms over different ranges (weights grow) compare.
        shapes.append((edges, [float(h.counts[i]) / h.counts.sum() / width_bin for i in inside],
                       color))
    if not shapes:
        return empty_plot(width, height, short, "no range", title_size=11)
    top = max(max(hs) for _, hs, _ in shapes) * 1.05 or 1.0
    frame = Frame(width, height, (lo, hi), (0.0, top), left=8, right=8, top=22, bottom=20)
    parts = [svg_open(width, height, title=label, css_class="plot hist"),
             axes(frame), text(8, 15, short, size=11, weight="600", tooltip=label)]
    for k, (edges, heights, color) in enumerate(shapes):
        parts.append(step_histogram(frame, edges, heights, color=color,
                                    opacity=0.18 if k == 0 else 0.3))
    ticks = [lo, 0.0, hi] if lo < 0 < hi and not log_axis else [lo, (lo + hi) / 2, hi]
    for t, anchor in zip(ticks, ("start", "middle", "end")):
        label_t = decade_label(t) if log_axis else f"{t:.2g}"
        parts.append(text(frame.x(t), height - 6, label_t, anchor=anchor, size=9, fill="#666"))
    parts.append(svg_close())
    return "".join(parts)
