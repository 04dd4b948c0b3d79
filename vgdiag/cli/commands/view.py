"""`vgdiag view`: a run folder in the dashboard, replayed or followed while it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vgdiag.errors import UserError


def view(
    run_dir: Annotated[Path, typer.Argument(
        help="A run folder written by `vgdiag run`, `vgdiag.watch(out=...)` or a callback.")],
    check: Annotated[bool, typer.Option(
        "--check", help="Load the folder as the dashboard would and say whether it can be "
        "shown, without opening it.")] = False,
) -> None:
    """Show a run folder in the dashboard: replayed, or followed live while it is written."""
    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.runs.reader import read_run
    from vgdiag.tui.state import view_from_run  # plain data, no Textual

    refuse_under_torchrun("the dashboard (vgdiag view)")
    run_data = read_run(run_dir)  # a folder that cannot be read is one line, exit 2
    try:
        view_from_run(run_data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise UserError(f"{run_dir} cannot be shown: {type(exc).__name__}: {exc}") from None
    if check:
        print(f"{run_dir}: {run_data.status}, {len(run_data.epochs)} epoch(s), "
              f"{len(run_data.records)} sampled step(s); verdict: {run_data.verdict}")
        return
    from vgdiag.cli.terminal import need_terminal

    need_terminal("vgdiag view", f"`vgdiag report {run_dir}` prints the run as text")
    from vgdiag.tui.app import view_folder  # Textual is loaded only here

    view_folder(run_dir, run_data)
