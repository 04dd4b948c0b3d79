"""The keys, listed from the app's own bindings."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    """Every key of the dashboard with what it does; any of escape, ? or q closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "close", "Close"),
    ]

    def __init__(self, bindings: list[Binding], notes: list[str]) -> None:
        super().__init__()
        self.bindings = bindings
        self.notes = notes

    def compose(self) -> ComposeResult:
        # The descriptions wrap under themselves; the box scrolls when the terminal is short.
        table = Table.grid(padding=(0, 2))
        table.add_column(no_wrap=True, style="bold")
        table.add_column(ratio=1)
        for binding in self.bindings:
            keys = ", ".join(self.app.get_key_display(Binding(k, binding.action))
                             for k in binding.key.split(","))
            table.add_row(keys, binding.tooltip or binding.description)
        with VerticalScroll(id="help-box"):
            yield Static("Keys", classes="box-title")
            yield Static(table)
            if self.notes:
                yield Static("\n".join(self.notes), classes="muted", markup=False)
            yield Static("escape closes this", classes="muted")

    def action_close(self) -> None:
        self.dismiss(None)
