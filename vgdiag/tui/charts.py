"""Text charts: bars, block columns, shaded heat cells and a braille line canvas.

Pure functions of numbers and sizes (no Textual, no colours chosen here): widgets
pass in the styles their stylesheet gives them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from rich.style import Style
from rich.text import Span, Text

from vgdiag.textfmt import fmt_num

EIGHTHS_H = " ▏▎▍▌▋▊▉█"  # horizontal bar ends, 0..8 eighths of a cell
EIGHTHS_V = " ▁▂▃▄▅▆▇█"  # vertical bar tops
SHADES = "·░▒▓█"  # heat cells, weakest to strongest: readable without colour


def fmt(x: float | None, digits: int = 2) -> str:
    """Short number for a cell: 2 significant digits by default, '-' for missing."""
    return fmt_num(x, digits)


def fmt_duration(seconds: float) -> str:
    """'1:02:03', '2:03' or '-' for unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def hbar(fraction: float, width: int) -> str:
    """A left-aligned bar `fraction` (0..1) of `width` cells, in eighths; padded to width."""
    if width <= 0:
        return ""
    if not math.isfinite(fraction) or fraction <= 0:
        return " " * width
    eighths = int(round(min(fraction, 1.0) * width * 8))
    full, part = divmod(eighths, 8)
    bar = "█" * full + (EIGHTHS_H[part] if part else "")
    return bar.ljust(width)


def log_span(values: Sequence[float], min_decades: float = 4.0) -> tuple[float, float]:
    """(lo, hi) in log10 covering the finite positive values, at least `min_decades` wide.

    hi is rounded up to a whole decade so bars do not jump with every small change.
    """
    logs = [math.log10(v) for v in values if math.isfinite(v) and v > 0]
    if not logs:
        return -min_decades, 0.0
    hi = math.ceil(max(logs))
    lo = min(math.floor(min(logs)), hi - min_decades)
    return float(lo), float(hi)


def log_fraction(value: float, lo: float, hi: float) -> float:
    """Where log10(value) sits in [lo, hi], as 0..1 (NaN for missing or non-positive)."""
    if not math.isfinite(value) or value <= 0 or hi <= lo:
        return math.nan
    return min(max((math.log10(value) - lo) / (hi - lo), 0.0), 1.0)


def shade(fraction: float) -> str:
    """One heat cell for 0..1; a space for missing."""
    if not math.isfinite(fraction):
        return " "
    return SHADES[min(int(fraction * len(SHADES)), len(SHADES) - 1)]


def rebin(counts: np.ndarray, lo: float, hi: float, new_lo: float, new_hi: float,
          bins: int) -> np.ndarray:
    """Counts of a histogram over [lo, hi] spread onto `bins` equal bins over [new_lo, new_hi].

    Each source bin's count is split over the target bins in proportion to overlap,
    so two histograms with different ranges can share one axis; the total is kept
    when the new range covers the old one.
    """
    out = np.zeros(bins, dtype=np.float64)
    n = len(counts)
    if n == 0 or bins <= 0 or not new_hi > new_lo:
        return out
    if not hi > lo:  # every value in one point
        idx = int(np.clip((lo - new_lo) / (new_hi - new_lo) * bins, 0, bins - 1))
        out[idx] = float(np.sum(counts))
        return out
    src = np.linspace(lo, hi, n + 1)
    dst = np.linspace(new_lo, new_hi, bins + 1)
    for i in range(n):
        c = float(counts[i])
        if c == 0:
            continue
        a, b = src[i], src[i + 1]
        left = np.maximum(dst[:-1], a)
        right = np.minimum(dst[1:], b)
        overlap = np.clip(right - left, 0.0, None)
        out += c * overlap / (b - a)
    return out


def column_chart(values: np.ndarray, height: int) -> list[str]:
    """Vertical bars, one per value, scaled to the largest; `height` rows, top row first."""
    width = len(values)
    if height <= 0 or width == 0:
        return []
    top = float(np.max(values)) if width else 0.0
    if not top > 0:
        return [" " * width for _ in range(height)]
    levels = np.round(values / top * height * 8).astype(int)
    rows = []
    for row in range(height - 1, -1, -1):
        base = row * 8
        chars = []
        for level in levels:
            fill = min(max(int(level) - base, 0), 8)
            chars.append(EIGHTHS_V[fill])
        rows.append("".join(chars))
    return rows


# -- braille canvas ---------------------------------------------------------------------

_BRAILLE_BASE = 0x2800
# Bit for the dot at (column 0..1, row 0..3) of a braille cell.
_DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))


class BrailleCanvas:
    """A width x height cell canvas with 2 x 4 dots per cell; the last series drawn wins a cell."""

    def __init__(self, width: int, height: int) -> None:
        self.width = max(width, 0)
        self.height = max(height, 0)
        self.bits = np.zeros((self.height, self.width), dtype=np.uint8)
        self.owner = np.full((self.height, self.width), -1, dtype=np.int16)

    def dot(self, x: int, y: int, series: int) -> None:
        """Set dot (x, y), x in 0..2*width-1, y in 0..4*height-1 counted from the top."""
        if 0 <= x < 2 * self.width and 0 <= y < 4 * self.height:
            row, col = y // 4, x // 2
            self.bits[row, col] |= _DOT_BITS[y % 4][x % 2]
            self.owner[row, col] = series

    def line(self, x0: int, y0: int, x1: int, y1: int, series: int) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for i in range(steps + 1):
            t = i / steps
            self.dot(round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t), series)

    def plot(
        self,
        xs: Sequence[float],
        ys: Sequence[float],
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        series: int,
    ) -> None:
        """Draw a polyline through the finite points, scaled into the canvas."""
        (x_lo, x_hi), (y_lo, y_hi) = x_range, y_range
        dots_w, dots_h = 2 * self.width - 1, 4 * self.height - 1
        if dots_w < 0 or dots_h < 0:
            return
        prev: tuple[int, int] | None = None
        for x, y in zip(xs, ys):
            if not (math.isfinite(x) and math.isfinite(y)):
                prev = None
                continue
            px = round((x - x_lo) / (x_hi - x_lo) * dots_w) if x_hi > x_lo else 0
            fy = (y - y_lo) / (y_hi - y_lo) if y_hi > y_lo else 0.5
            py = dots_h - round(min(max(fy, 0.0), 1.0) * dots_h)
            if prev is None:
                self.dot(px, py, series)
            else:
                self.line(prev[0], prev[1], px, py, series)
            prev = (px, py)

    def rows(self) -> list[list[tuple[str, int]]]:
        """Per row, per cell: (character, series index or -1 for empty)."""
        out = []
        for r in range(self.height):
            out.append([
                (chr(_BRAILLE_BASE + int(b)) if b else " ", int(o))
                for b, o in zip(self.bits[r], self.owner[r])
            ])
        return out


def bucket(n: int, columns: int) -> list[tuple[int, int]]:
    """Indices 0..n-1 as exactly `columns` contiguous [start, stop) runs, in order.

    More columns than indices: each index spans several neighbouring columns.
    """
    if n <= 0 or columns <= 0:
        return []
    if n <= columns:
        return [(j * n // columns, j * n // columns + 1) for j in range(columns)]
    edges = np.linspace(0, n, columns + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


class TextBuilder:
    """Builds one rich Text from many small styled pieces, cheaply.

    Text.append checks every piece for control codes; a chart of a few thousand
    cells would pay that per cell on every redraw. Here the pieces are joined once
    and neighbouring pieces with the same style share one span.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._spans: list[Span] = []
        self._length = 0

    def add(self, text: str, style: Style | str = "") -> None:
        if not text:
            return
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        if not style:
            return
        last = self._spans[-1] if self._spans else None
        if last is not None and last.end == start and last.style == style:
            self._spans[-1] = Span(last.start, self._length, style)
        else:
            self._spans.append(Span(start, self._length, style))

    def text(self) -> Text:
        return Text("".join(self._parts), spans=self._spans, no_wrap=True, overflow="crop")
