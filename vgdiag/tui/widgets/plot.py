"""A braille line plot: a few series over a shared x axis, drawn in text."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.reactive import reactive

from vgdiag.textfmt import pack
from vgdiag.tui.charts import BrailleCanvas, TextBuilder, fmt
from vgdiag.tui.widgets.chart import Chart

Y_LABEL_WIDTH = 7


@dataclass(frozen=True)
class Series:
    """One line of a plot."""

    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    style: str = "series--0"  # a Chart component class


def finite_range(series: Sequence[Series], axis: str) -> tuple[float, float]:
    """(min, max) of the finite values on `axis` ("x" or "y") over all series."""
    values = [v for s in series for v in (s.xs if axis == "x" else s.ys) if math.isfinite(v)]
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        return lo - pad, hi + pad
    return lo, hi


class LinePlot(Chart):
    """Series drawn as braille lines, a legend on top and the axes' ends labelled."""

    series: reactive[tuple[Series, ...]] = reactive(())
    """What is drawn; reassign a new tuple to change it."""

    def __init__(
        self,
        title: str,
        *,
        x_label: str = "step",
        y_range: tuple[float, float] | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.x_label = x_label
        self.y_range = y_range  # fixed range (accuracy 0..1); None fits the data
        self.empty = "nothing to plot yet"  # shown when no series has a finite value

    def render(self) -> Text:
        muted = self.style_of("chart--muted")
        out = Text(no_wrap=True, overflow="crop")
        # The title and one "━ label" per series, in as many lines as the width needs:
        # a legend cropped mid-label reads as another word (two plots side by side).
        entries: list[tuple[str, str]] = [(self.title, "")] + [
            (s.label, s.style) for s in self.series]
        lines = pack(entries, self.size.width or 60, 2,
                     lambda e: len(e[0]) + (2 if e[1] else 0))
        for line in lines:
            for k, (label, style) in enumerate(line):
                if style:
                    out.append("  ━ " if k else "━ ", style=self.style_of(style))
                    out.append(label, style=muted)
                else:
                    out.append(label, style=self.style_of("chart--title"))
            out.append("\n")
        drawn = [s for s in self.series if any(math.isfinite(y) for y in s.ys)]
        if not drawn:
            out.append(self.empty, style=muted)
            return out
        width = max((self.size.width or 60) - Y_LABEL_WIDTH - 1, 2)
        height = max((self.size.height or 10) - 1 - len(lines), 1)
        x_range = finite_range(drawn, "x")
        y_range = self.y_range or finite_range(drawn, "y")
        canvas = BrailleCanvas(width, height)
        for index, s in enumerate(drawn):
            canvas.plot(s.xs, s.ys, x_range, y_range, index)
        styles = [self.style_of(s.style) for s in drawn]
        body = TextBuilder()
        for r, row in enumerate(canvas.rows()):
            label = fmt(y_range[1], 3) if r == 0 else fmt(y_range[0], 3) if r == height - 1 else ""
            body.add(f"{label:>{Y_LABEL_WIDTH}}┤", muted)
            for char, owner in row:
                body.add(char, styles[owner] if owner >= 0 else "")
            body.add("\n")
        lo, hi = f"{self.x_label} {x_range[0]:.0f}", f"{x_range[1]:.0f}"
        body.add(" " * (Y_LABEL_WIDTH + 1) + lo + hi.rjust(width - len(lo)), muted)
        out.append_text(body.text())
        return out
