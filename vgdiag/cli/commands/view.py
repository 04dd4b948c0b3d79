"""`vgdiag view`: a run folder in the dashboard, replayed or followed while it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def view(
    run_dir: Annotated[Path, typer.Argument(
        help="A run folder written by `vgdiag run`, `vgdiag.watch(out=...)` or a callback.")],
) -> None:
    """Show a run folder in the dashboard: replayed, or followed live while it is written."""
    from vgdiag.runs.store import read_run

    run_data = read_run(run_dir)  # a folder that cannot be read is one line, exit 2
    from vgdiag.tui.app import view_folder  # Textual is loaded only here

    view_folder(run_dir, run_data)
