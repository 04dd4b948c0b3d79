"""`vgdiag view`: a run folder in the dashboard, replayed or followed while it is written."""

from __future__ import annotations

from vgdiag.cli.options_typer import command
from vgdiag.inputs.options import ViewOptions


@command(ViewOptions)
def view(cmd: ViewOptions) -> None:
    """Show a run folder in the dashboard: replayed, or followed live while it is written."""
    from vgdiag.runs.store import read_run

    run_data = read_run(cmd.run_dir)  # a folder that cannot be read is one line, exit 2
    from vgdiag.tui.app import view_folder  # Textual is loaded only here

    view_folder(cmd.run_dir, run_data)
