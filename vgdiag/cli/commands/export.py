"""`vgdiag export`: a run folder in another tool's format (TensorBoard event files)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vgdiag.errors import UserError


def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `vgdiag run` or "
                                            "`vgdiag.watch(out=...)`.")],
    tensorboard: Annotated[Path | None, typer.Option(
        "--tensorboard", help="Write TensorBoard event files into this folder "
        "(then: tensorboard --logdir FOLDER).")] = None,
) -> None:
    """Export a run folder's per-layer scalars and histograms to TensorBoard."""
    if tensorboard is None:
        raise UserError("say where to export: vgdiag export RUN_DIR --tensorboard FOLDER")
    from vgdiag.runs.export_tb import export_tensorboard
    from vgdiag.runs.reader import read_run

    run_data = read_run(run_dir)
    done = export_tensorboard(run_data, tensorboard)
    for note in run_data.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {done.scalars} scalars in {done.series} series and {done.histograms} "
          f"histograms to {done.log_dir}  (view: tensorboard --logdir {done.log_dir})")
