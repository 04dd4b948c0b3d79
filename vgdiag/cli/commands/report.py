"""`vgdiag report`: a run folder as Markdown, HTML or JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from vgdiag.cli.exits import check_fail_on, exit_code_for
from vgdiag.cli.options_typer import FailOnOpt
from vgdiag.errors import UserError


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `vgdiag run`.")],
    format: Annotated[str, typer.Option("--format", "-f", help="md | html | json.")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    fail_on: FailOnOpt = "none",
) -> None:
    """Render a run folder as Markdown, a self-contained HTML page, or JSON."""
    from vgdiag.runs.report import render_report
    from vgdiag.runs.store import read_run

    check_fail_on(fail_on)
    if format not in ("md", "html", "json"):
        raise UserError(f"unknown --format {format!r}: use md, html or json")
    run_data = read_run(run_dir)
    text = render_report(run_data, format)
    if out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        _write_text(out, text)
        for note in run_data.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {out}", file=sys.stderr)
    raise typer.Exit(exit_code_for(run_data.findings, fail_on))


def _write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
