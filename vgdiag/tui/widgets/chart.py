"""The base of the dashboard's drawn panels: a widget whose colours come from the stylesheet."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from vgdiag.tui.state import RunView


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


class LayerChart(Chart):
    """A panel of the selected layer of a run; says `EMPTY` until both are known."""

    EMPTY = "select a layer"

    view: reactive[RunView | None] = reactive(None)
    """The run shown."""
    selected: reactive[str | None] = reactive(None)
    """The layer drawn."""

    def render(self) -> Text:
        if self.view is None or self.selected is None:
            return Text(self.EMPTY, style=self.style_of("chart--muted"))
        return self.draw(self.view, self.selected)

    def draw(self, view: RunView, layer: str) -> Text:
        """The panel for `layer` of `view`."""
        raise NotImplementedError
