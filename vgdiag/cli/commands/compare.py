"""`vgdiag compare`: the baseline and each mitigation under the same budget.

A thin shell over vgdiag.runs.compare_cli (which resolves a preset and drives the one
compare engine); what stays here is the front end's: signals and exit codes.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import typer
from rich.console import Console

from vgdiag.cli.exits import exit_code_for
from vgdiag.cli.options_typer import command
from vgdiag.cli.prepare import parse_plugin_options, preflight
from vgdiag.cli.signals import StopOnSignal
from vgdiag.errors import ExitCode, UserError
from vgdiag.inputs.options import CompareOptions, RunOptions


def _given(names: list[str]) -> set[str]:
    """The options the user typed (not left at their defaults) on this command line."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer with click installed
        from click import get_current_context  # type: ignore[no-redef]
    ctx = get_current_context(silent=True)
    if ctx is None:
        return set()
    return {n for n in names
            if getattr(ctx.get_parameter_source(n), "name", "DEFAULT") != "DEFAULT"}


def _explicit_run_fields(opts: RunOptions) -> dict[str, Any]:
    """RunOptions fields typed on the command line or set by a --recipe file."""
    fields = dataclasses.fields(RunOptions)
    typed = _given([f.name for f in fields])
    default = RunOptions()
    return {f.name: getattr(opts, f.name) for f in fields
            if f.name in typed or getattr(opts, f.name) != getattr(default, f.name)}


@command((RunOptions, ("keep_going",)), CompareOptions, recipe=True)
def compare(opts: RunOptions, cmd: CompareOptions) -> None:
    """Train the baseline and each mitigation with the same split, seeds and epochs."""
    import shlex

    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import discover_plugins
    from vgdiag.runs import compare_cli
    from vgdiag.runs.compare import VariantState
    from vgdiag.runs.folder import default_run_dir, prepare_run_dir

    refuse_under_torchrun("vgdiag compare")
    if not 0 < cmd.target_acc <= 1:
        raise UserError(f"--target-acc must be in (0, 1], got {cmd.target_acc}")
    typed = _given(["plugins", "jobs"])
    found, errors = discover_plugins()
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    request = compare_cli.CompareRequest(
        run_fields=_explicit_run_fields(opts),
        defaults={f.name: getattr(opts, f.name) for f in dataclasses.fields(RunOptions)},
        plugins=cmd.plugins if "plugins" in typed or cmd.preset is None else None,
        plugin_opts=parse_plugin_options(cmd.plugin_opt), preset=cmd.preset,
        seeds=cmd.seeds, jobs=cmd.jobs if "jobs" in typed or cmd.preset is None else None)
    opts, specs, jobs = compare_cli.resolve(request, found)
    if cmd.tui:
        from vgdiag.cli.terminal import need_terminal

        need_terminal("vgdiag compare --tui", "drop --tui for the text table")
    # Load once up front so bad data or model specs fail before any variant starts.
    from vgdiag.inputs.recipe import build_experiment, load_data

    bundle = load_data(opts)
    preflight(build_experiment(opts, bundle), bundle)
    out_dir = prepare_run_dir(cmd.out or default_run_dir("compare"))
    console = Console()
    console.print(f"[bold]vgdiag compare[/]: {len(specs)} variant run(s), {jobs} job(s); "
                  f"folder {out_dir}")
    if cmd.tui:
        from vgdiag.tui.compare_board import run_board  # Textual is loaded only here

        outcomes, interrupted = run_board(opts, specs, out_dir, jobs=jobs)
    else:
        with StopOnSignal() as stopper:
            outcomes = compare_cli.run_headless(opts, specs, out_dir, jobs, console,
                                                stopper.event)
        interrupted = stopper.event.is_set()
    if interrupted:
        console.print("[yellow]interrupted:[/] the table covers the variants that ran")
    ran = [o for o in outcomes if o.state is not VariantState.SKIPPED]
    if not ran:
        raise typer.Exit(ExitCode.INTERRUPTED)
    command_line = "vgdiag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    compare_cli.write_and_show(out_dir, outcomes, cmd.target_acc, command_line, opts, console)
    findings = [Finding.from_json(f) for o in ran[:1] if o.summary
                for f in o.summary.get("findings", [])]
    if interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)
    failed = [o for o in outcomes if o.state is VariantState.FAILED]
    for o in failed:  # the table said so too; stderr is what a CI log keeps
        print(f"vgdiag: error: variant {o.name} failed: {o.reason}", file=sys.stderr)
    if failed:
        raise typer.Exit(ExitCode.TRAINING_FAILED)
    raise typer.Exit(exit_code_for(findings, cmd.fail_on))
