"""`vgdiag view`: replay a saved run folder in the dashboard."""

from __future__ import annotations

from vgdiag.cli.options_typer import command
from vgdiag.inputs.options import ViewOptions


@command(ViewOptions)
def view(cmd: ViewOptions) -> None:
    """Replay a saved run folder in the dashboard."""
    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.runs.store import read_run

    refuse_under_torchrun("the dashboard (vgdiag view)")

    run_data = read_run(cmd.run_dir)
    from vgdiag.tui.app import view_run  # Textual is loaded only here

    view_run(run_data)
