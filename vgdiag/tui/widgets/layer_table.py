"""The layer table: one keyed row per layer; its cursor picks the layer the histograms show."""

from __future__ import annotations

import math
from typing import ClassVar

from rich.text import Text
from textual.widgets import DataTable

from vgdiag.engine.records import LayerStats
from vgdiag.tui.charts import fmt
from vgdiag.tui.state import RunView, grad_ratios, health

# Short labels: all nine columns fit an 80-column terminal. The help screen says
# what each one is.
COLUMNS = (
    ("layer", "layer"),
    ("kind", "kind"),
    ("grad", "grad"),
    ("ratio", "÷ out"),
    ("update", "update"),
    ("change", "Δ init"),
    ("saturated", "sat"),
    ("dead", "dead"),
)
FIRST_NUMBER = 2  # the columns before it name the layer and do not change


class LayerTable(DataTable[Text]):
    """Layers in depth order with their latest numbers; rows are keyed by layer name."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "health--bad",
        "health--weak",
        "health--ok",
        "health--none",
    }

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self._layer_names: tuple[str, ...] = ()

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show(self, view: RunView | None) -> None:
        """Bring the rows up to date with `view`, keeping the cursor on its layer."""
        if view is None:
            return
        names = tuple(i.name for i in view.layers)
        record = view.last
        ratios = grad_ratios(record, view.layers) if record else {}
        rows = {}
        for info in view.layers:
            stats = record.layers.get(info.name) if record else None
            ratio = ratios.get(info.name, math.nan)
            style = self.get_component_rich_style(f"health--{health(ratio)}", partial=True)

            def num(key: str, stats: LayerStats | None = stats) -> float | None:
                return getattr(stats, key) if stats is not None else None

            rows[info.name] = {
                "layer": Text(info.name or "<root>"),
                "kind": Text(info.kind_label + ("" if info.trainable else " (frozen)")),
                "grad": Text(fmt(num("grad_norm")), justify="right"),
                "ratio": Text(fmt(ratio), style=style, justify="right"),
                "update": Text(fmt(num("update_ratio")), justify="right"),
                "change": Text(fmt(num("weight_change")), justify="right"),
                "saturated": Text(fmt(num("act_saturated")), justify="right"),
                "dead": Text(fmt(num("act_dead")), justify="right"),
            }
        if names != self._layer_names:
            selected = self.selected_layer
            self.clear()
            for name in names:
                self.add_row(*(rows[name][key] for key, _ in COLUMNS), key=name)
            self._layer_names = names
            if selected in names:
                self.move_cursor(row=names.index(selected))
            return
        for name in names:
            for key, _ in COLUMNS[FIRST_NUMBER:]:
                self.update_cell(name, key, rows[name][key])

    @property
    def selected_layer(self) -> str | None:
        """The layer under the cursor (None when the table is empty)."""
        if not self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value
