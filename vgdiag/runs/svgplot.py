"""Dependency-free SVG plot primitives: frames, scales, axes, lines, histograms, legends.

Every function returns SVG markup as a string. Every piece of text that reaches the
markup goes through `esc`, so labels may come straight from a user's model or files.
Values that cannot be drawn (None, NaN, inf; and 0 or negatives on a log axis) are
left out: a line breaks where they are instead of dropping to a made-up value.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

# Plasma, cut before its pale yellow end so the output-side lines stay readable on white.
_RAMP = ("#0d0887", "#5302a3", "#8b0aa5", "#b83289", "#db5c68", "#f48849", "#e8a317")
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"


def esc(text: object) -> str:
    """HTML/SVG-escape anything for text or an attribute value (quotes included)."""
    return html.escape(str(text), quote=True)


def ramp_color(index: int, count: int) -> str:
    """Colour `index` of `count`, from the input side (dark blue) to the output side (orange)."""
    if count <= 1:
        return _RAMP[0]
    t = min(max(index / (count - 1), 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    frac = t - i
    a, b = _RAMP[i], _RAMP[i + 1]
    rgb = [
        round(int(a[k : k + 2], 16) * (1 - frac) + int(b[k : k + 2], 16) * frac)
        for k in (1, 3, 5)
    ]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def log10_or_none(value: float | None) -> float | None:
    """log10 of a positive finite value; None for what a log axis cannot show."""
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return math.log10(value)


def decade_range(log_values: Iterable[float | None]) -> tuple[int, int] | None:
    """Whole decades (lo, hi) that cover the finite log10 values; None when there are none."""
    ok = [v for v in log_values if v is not None and math.isfinite(v)]
    if not ok:
        return None
    lo, hi = math.floor(min(ok)), math.ceil(max(ok))
    if hi - lo < 1:
        hi = lo + 1
    return lo, hi


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values between lo and hi (1, 2 or 5 times a power of 10)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(0.0 if abs(v) < step * 1e-9 else v)
        v += step
    return ticks


def tick_label(value: float) -> str:
    return f"{value:.4g}"


def decade_label(exponent: float) -> str:
    return f"1e{int(exponent)}"


def log_ticks(lo: int, hi: int) -> list[tuple[float, str]]:
    """Ticks (log10 value, label) for a log axis over decades lo..hi.

    Narrow ranges get 2x and 5x ticks too, so a plot within one decade still reads;
    wide ranges label every k-th decade to keep about eight labels.
    """
    if hi - lo <= 2:
        ticks = []
        for k in range(lo, hi):
            ticks += [(k + math.log10(m), f"{m}e{k}") for m in (1, 2, 5)]
        return ticks + [(float(hi), decade_label(hi))]
    step = max(1, math.ceil((hi - lo) / 8))
    return [(float(e), decade_label(e)) for e in range(lo, hi + 1, step)]


@dataclass
class Frame:
    """A plot area inside an SVG canvas; maps data coordinates to pixels."""

    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 58
    right: int = 14
    top: int = 28
    bottom: int = 42

    # The plot area's edges in pixels, fixed at construction.
    plot_left: float = field(init=False)
    plot_right: float = field(init=False)
    plot_top: float = field(init=False)
    plot_bottom: float = field(init=False)

    def __post_init__(self) -> None:
        self.plot_left, self.plot_top = self.left, self.top
        self.plot_right, self.plot_bottom = self.width - self.right, self.height - self.bottom

    def x(self, value: float) -> float:
        return self.plot_left + _share(value, self.x_range) * (self.plot_right - self.plot_left)

    def y(self, value: float) -> float:
        return self.plot_bottom - _share(value, self.y_range) * (self.plot_bottom - self.plot_top)


def _share(value: float, bounds: tuple[float, float]) -> float:
    """How far `value` lies from the low end of `bounds` to the high end (0 to 1 inside)."""
    lo, hi = bounds
    return (value - lo) / (hi - lo or 1.0)


def svg_open(width: int, height: int, *, title: str = "", css_class: str = "plot") -> str:
    """Opening <svg> tag (standalone-valid: xmlns set) with an accessible title."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="{esc(css_class)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" font-family="{esc(FONT)}" font-size="11">'
    )
    return head + (f"<title>{esc(title)}</title>" if title else "")


def svg_close() -> str:
    return "</svg>"


def text(
    x: float, y: float, label: object, *, anchor: str = "start", size: int = 11,
    weight: str = "normal", fill: str = "#333", rotate: float = 0.0, tooltip: str = "",
) -> str:
    transform = f' transform="rotate({rotate:g} {x:.1f} {y:.1f})"' if rotate else ""
    inner = esc(label) + (f"<title>{esc(tooltip)}</title>" if tooltip else "")
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
        f'font-weight="{weight}" fill="{fill}"{transform}>{inner}</text>'
    )


def axes(
    frame: Frame,
    *,
    x_ticks: Sequence[tuple[float, str]] = (),
    y_ticks: Sequence[tuple[float, str]] = (),
    x_label: str = "",
    y_label: str = "",
    title: str = "",
    x_tick_rotate: float = 0.0,
) -> str:
    """Plot background, grid lines at the y ticks, tick labels, axis labels and a title."""
    f = frame
    parts = [
        f'<rect x="{f.plot_left:.1f}" y="{f.plot_top:.1f}" '
        f'width="{f.plot_right - f.plot_left:.1f}" height="{f.plot_bottom - f.plot_top:.1f}" '
        'fill="#fafafa" stroke="#ccc"/>'
    ]
    for value, label in y_ticks:
        y = f.y(value)
        parts.append(
            f'<line x1="{f.plot_left:.1f}" x2="{f.plot_right:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e4e4e4"/>'
        )
        parts.append(text(f.plot_left - 5, y + 3.5, label, anchor="end", fill="#555"))
    for value, label in x_ticks:
        x = f.x(value)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{f.plot_bottom:.1f}" '
            f'y2="{f.plot_bottom + 4:.1f}" stroke="#999"/>'
        )
        if x_tick_rotate:
            parts.append(text(x + 3, f.plot_bottom + 12, label, anchor="end", fill="#555",
                              rotate=x_tick_rotate))
        else:
            parts.append(text(x, f.plot_bottom + 15, label, anchor="middle", fill="#555"))
    if x_label:
        parts.append(text((f.plot_left + f.plot_right) / 2, f.height - 6, x_label,
                          anchor="middle", fill="#333"))
    if y_label:
        cy = (f.plot_top + f.plot_bottom) / 2
        parts.append(text(13, cy, y_label, anchor="middle", rotate=-90))
    if title:
        parts.append(text(f.plot_left, 17, title, size=13, weight="600", fill="#222"))
    return "".join(parts)


def _drawable(
    xs: Sequence[float], ys: Sequence[float | None]
) -> Iterator[tuple[int, float, float] | None]:
    """(index, x, y) of each point a plot can show; None where one cannot be (a gap)."""
    for i, (x, y) in enumerate(zip(xs, ys)):
        yield (i, x, y) if y is not None and math.isfinite(y) and math.isfinite(x) else None


def line(
    frame: Frame,
    xs: Sequence[float],
    ys: Sequence[float | None],
    *,
    color: str,
    width: float = 1.6,
    dash: str = "",
    css_class: str = "series",
    tooltip: str = "",
) -> str:
    """One <path> through the points, broken where y is None or not finite."""
    commands: list[str] = []
    pen_down = False
    for point in _drawable(xs, ys):
        if point is None:
            pen_down = False
            continue
        _, x, y = point
        commands.append(f"{'L' if pen_down else 'M'}{frame.x(x):.1f},{frame.y(y):.1f}")
        pen_down = True
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    tip = f"<title>{esc(tooltip)}</title>" if tooltip else ""
    # A lone point (a run with one sample) is a zero-length segment; round caps show it.
    return (
        f'<path class="{esc(css_class)}" d="{" ".join(commands)}" fill="none" '
        f'stroke="{color}" stroke-width="{width:g}" stroke-linejoin="round" '
        f'stroke-linecap="round"{dash_attr}>{tip}</path>'
    )


def markers(
    frame: Frame,
    xs: Sequence[float],
    ys: Sequence[float | None],
    *,
    color: str,
    radius: float = 2.8,
    hollow: bool = False,
    tooltips: Sequence[str] | None = None,
) -> str:
    parts = []
    fill = "#fff" if hollow else color
    for point in _drawable(xs, ys):
        if point is None:
            continue
        i, x, y = point
        tip = f"<title>{esc(tooltips[i])}</title>" if tooltips else ""
        parts.append(
            f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="{radius:g}" '
            f'fill="{fill}" stroke="{color}" stroke-width="1.3">{tip}</circle>'
        )
    return "".join(parts)


def hline(
    frame: Frame, y: float, *, color: str = "#888", dash: str = "4 3", label: str = ""
) -> str:
    """A horizontal reference line across the plot, with an optional label at its right end."""
    if not math.isfinite(y) or not (min(frame.y_range) <= y <= max(frame.y_range)):
        return ""
    py = frame.y(y)
    out = (
        f'<line x1="{frame.plot_left:.1f}" x2="{frame.plot_right:.1f}" y1="{py:.1f}" '
        f'y2="{py:.1f}" stroke="{color}" stroke-dasharray="{dash}"/>'
    )
    if label:
        out += text(frame.plot_right - 4, py - 4, label, anchor="end", size=10, fill=color)
    return out


def step_histogram(
    frame: Frame,
    edges: Sequence[float],
    heights: Sequence[float],
    *,
    color: str,
    opacity: float = 0.25,
    dash: str = "",
) -> str:
    """A histogram drawn as a filled step outline (bins given by edges, len(heights)+1)."""
    if len(edges) != len(heights) + 1 or not heights:
        return ""
    base = frame.y(frame.y_range[0])
    pts = [f"M{frame.x(edges[0]):.1f},{base:.1f}"]
    for i, h in enumerate(heights):
        y = frame.y(h if math.isfinite(h) else 0.0)
        pts.append(f"L{frame.x(edges[i]):.1f},{y:.1f} L{frame.x(edges[i + 1]):.1f},{y:.1f}")
    pts.append(f"L{frame.x(edges[-1]):.1f},{base:.1f} Z")
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<path class="hist" d="{" ".join(pts)}" fill="{color}" fill-opacity="{opacity:g}" '
        f'stroke="{color}" stroke-width="1.2"{dash_attr}/>'
    )


def legend(
    entries: Sequence[tuple[str, str, str]],
    x: float,
    y: float,
    *,
    row_height: float = 15,
    max_label: int = 28,
) -> str:
    """Legend rows (label, colour, dash) from (x, y) downward; long labels are shortened."""
    return "".join(_legend_entry(x, y + i * row_height, label, color, dash, max_label)[0]
                   for i, (label, color, dash) in enumerate(entries))


def legend_row(
    entries: Sequence[tuple[str, str, str]], x: float, y: float, *, max_label: int = 24
) -> str:
    """Legend entries (label, colour, dash) side by side from (x, y), e.g. under a title."""
    parts = []
    for label, color, dash in entries:
        entry, short = _legend_entry(x, y, label, color, dash, max_label)
        parts.append(entry)
        x += 23 + 6.3 * len(short) + 14  # ~6.3 px per character at 11 px
    return "".join(parts)


def _legend_entry(x: float, y: float, label: str, color: str, dash: str,
                  max_label: int) -> tuple[str, str]:
    """A line sample and its label at (x, y); the label as shown, for the next entry's place."""
    short = shorten(label, max_label)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x:.1f}" x2="{x + 18:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
        f'stroke="{color}" stroke-width="2.2"{dash_attr}/>'
        + text(x + 23, y + 3.5, short, tooltip=label)
    ), short


def shorten(label: str, limit: int) -> str:
    """`label`, cut in the middle with an ellipsis when longer than `limit` characters."""
    if len(label) <= limit:
        return label
    keep = max(limit - 1, 2)
    return label[: keep // 2] + "\u2026" + label[len(label) - (keep - keep // 2) :]


def empty_plot(width: int, height: int, title: str, message: str, *, title_size: int = 13) -> str:
    """A framed placeholder saying why there is nothing to draw."""
    return (
        svg_open(width, height, title=title, css_class="plot empty")
        + f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="#fafafa" '
        'stroke="#ddd"/>'
        + (text(8, 15 if title_size < 13 else 20, title, size=title_size, weight="600",
                fill="#222") if title else "")
        + text(width / 2, height / 2, message, anchor="middle", fill="#777")
        + svg_close()
    )
