"""Pick a mitigation to train beside the run: the applicable plugins, each with its summary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


@dataclass(frozen=True)
class FixChoice:
    """One plugin as the picker shows it."""

    name: str
    summary: str
    why_not: str | None  # None: it applies to this run
    recommended: bool  # a finding of this run recommends it


class FixPicker(ModalScreen[str | None]):
    """A list of plugins; enter trains the run again with the highlighted one applied.

    Plugins that do not apply are listed, disabled, with the reason.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, choices: list[FixChoice], notes: list[str] | None = None) -> None:
        super().__init__()
        self.choices = choices
        self.notes = notes or []

    def compose(self) -> ComposeResult:
        width = max((len(c.name) for c in self.choices), default=8)
        options = []
        for choice in self.choices:
            # The mark leads the line (at the end it would wrap onto a line of its own);
            # a long summary wraps under itself.
            prompt = Table.grid(padding=(0, 1), expand=True)
            prompt.add_column(width=1)
            prompt.add_column(width=width, style="bold")
            prompt.add_column(ratio=1)
            mark = "★" if choice.recommended and choice.why_not is None else ""
            what = (Text(choice.summary) if choice.why_not is None else
                    Text(f"does not apply: {choice.why_not}", style="italic"))
            prompt.add_row(mark, choice.name, what)
            options.append(Option(prompt, id=choice.name, disabled=choice.why_not is not None))
        with Vertical(id="picker-box"):
            yield Static("Apply a fix: train this run again with one plugin", classes="box-title")
            if options:
                yield OptionList(*options, id="fix-options")
            else:
                yield Static("no plugins are installed", classes="muted")
            for note in self.notes:
                yield Static(note, classes="muted")
            yield Static("★ recommended by the diagnosis · enter trains it beside this run · "
                         "escape cancels", classes="muted")

    def on_mount(self) -> None:
        options = self.query(OptionList)
        if options:
            first = next((i for i, c in enumerate(self.choices) if c.why_not is None), None)
            options.first().highlighted = first

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
