"""The keys of the dashboard and the compare board, and the help screen that lists them."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.binding import Binding, BindingType

from vgdiag.tui.layout import TABS
from vgdiag.tui.screens.help import HelpScreen


def quit_keys(tooltip: str, ctrl_c: str = "quit") -> list[BindingType]:
    """q (what it does said by `tooltip`), and ctrl+c, unlisted, doing the action
    `ctrl_c` (the same as q unless a board's q stops gently)."""
    return [Binding("q", "quit", "Quit", tooltip=tooltip),
            Binding("ctrl+c", ctrl_c, "Quit", show=False, priority=True)]


HELP_KEY = Binding("question_mark", "help", "Keys", tooltip="This list of keys")

DASHBOARD_KEYS: list[BindingType] = [
    *quit_keys("Quit (still training: it stops, marked interrupted)"),
    Binding("p,space", "toggle_pause", "Pause", tooltip="Pause or resume training"),
    Binding("f", "pick_fix", "Fix",
            tooltip="Train this run again with a mitigation plugin, beside it"),
    Binding("c", "compare", "Before/after",
            tooltip="The run and its fixed variant side by side"),
    Binding("n", "next_variant", "Next variant",
            tooltip="Before/after with the next of the saved variants"),
    Binding("s", "save_svg", "SVG",
            tooltip="Save an SVG screenshot into the run folder"),
    Binding("r", "export_report", "Report", tooltip="Write report.html into the run folder"),
    *(Binding(str(key), f"show_tab('{tab}')", title, show=False, tooltip=tip)
      for key, (tab, (title, tip)) in enumerate(TABS.items(), 1)),
    Binding("left_square_bracket", "step_layer(-1)", "Previous layer", show=False,
            tooltip="Select the previous layer (toward the input)"),
    Binding("right_square_bracket", "step_layer(1)", "Next layer", show=False,
            tooltip="Select the next layer (toward the output)"),
    HELP_KEY,
]


def dashboard_notes(*, followed: bool, live: bool) -> list[str]:
    """What the dashboard's help says besides its keys."""
    notes = ["ctrl+c also quits.",
             "In the layer table, arrows or the mouse pick a layer; [ and ] anywhere.",
             "Layer columns: grad norm, ÷ out (grad over the output layer's), update "
             "(update ÷ weight), Δ init (weight change since init), sat (saturated "
             "activations), dead (dead units)."]
    if followed:
        notes.append("This run is written by another process: pausing and fixes "
                     "belong to it.")
    elif not live:
        notes.append("This is a saved run: pausing and fixes need a live one (vgdiag run).")
    return notes


def show_help(app: App[Any], notes: list[str]) -> None:
    """Open the help screen over `app`: the keys it offers now, then `notes`."""
    if isinstance(app.screen, HelpScreen):
        return
    shown = [b for b in app.BINDINGS if isinstance(b, Binding) and b.key != "ctrl+c"
             and app.check_action(b.action.partition("(")[0], ()) is not False]
    app.push_screen(HelpScreen(shown, notes))
