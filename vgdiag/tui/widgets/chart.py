"""The base of the dashboard's drawn panels: a widget whose colours come from the stylesheet."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from textual.widget import Widget


class Chart(Widget):
    """A panel drawn as text; styles are component classes set in vgdiag.tcss.

    health--bad/weak/ok: a layer's gradient relative to the output layer.
    series--0..3: lines of a plot. chart--muted: axes and labels. chart--title: headings.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "health--bad",
        "health--weak",
        "health--ok",
        "health--none",
        "series--0",
        "series--1",
        "series--2",
        "series--3",
        "chart--muted",
        "chart--title",
        "chart--selected",
    }

    def style_of(self, name: str) -> Style:
        """The rich style the stylesheet gives component class `name`."""
        return self.get_component_rich_style(name, partial=True)
