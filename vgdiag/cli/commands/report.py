"""`vgdiag report`: a run folder as Markdown, HTML or JSON."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vgdiag.cli.exits import report_exit_code
from vgdiag.cli.options_typer import command
from vgdiag.errors import ExitCode, UserError
from vgdiag.inputs.options import ReportOptions


@command(ReportOptions)
def report(cmd: ReportOptions) -> None:
    """Render a run folder as Markdown, a self-contained HTML page, or JSON."""
    from vgdiag.runs.reader import read_run
    from vgdiag.runs.report import render_report

    run_data = read_run(cmd.run_dir)
    comparison = None
    if cmd.baseline is not None:
        from vgdiag.runs.regression import compare_to_baseline

        gate = "warning" if cmd.fail_on == "none" else str(cmd.fail_on)
        try:
            base = read_run(cmd.baseline)
        except UserError as exc:
            raise UserError(f"--baseline: {exc}") from None
        comparison = compare_to_baseline(run_data, base, gate, cmd.tolerance)
    text = render_report(run_data, cmd.format, comparison)
    if cmd.out is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        _write_text(cmd.out, text)
        for note in run_data.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {cmd.out}", file=sys.stderr)
    if comparison is None:
        raise typer.Exit(report_exit_code(run_data.status, run_data.findings, cmd.fail_on))
    # Against a baseline only what got worse fails the build, each said on stderr.
    for difference in comparison.differences:
        print(f"vgdiag: note: the baseline differs: {difference}", file=sys.stderr)
    for regression in comparison.regressions:
        print(f"vgdiag: regression: {regression.message}", file=sys.stderr)
    raise typer.Exit(ExitCode.FINDINGS if comparison.regressions else ExitCode.OK)


def _write_text(path: Path, text: str) -> None:
    """Write the report in one rename: a full disk leaves no partial or empty file."""
    import errno

    from vgdiag.runs.folder import write_text_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError(f"no space left on device: {path}") from None
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
