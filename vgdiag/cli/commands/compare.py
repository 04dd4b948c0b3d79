"""`vgdiag compare`: the baseline and each mitigation under the same budget."""

from __future__ import annotations

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


@command((RunOptions, ("keep_going",)), CompareOptions, recipe=True)
def compare(opts: RunOptions, cmd: CompareOptions) -> None:
    """Train the baseline and each mitigation with the same seed, data and budget."""
    import shlex

    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import discover_plugins, resolve_plugin_names
    from vgdiag.runs.compare import compare_variants
    from vgdiag.runs.compare_report import rich_table, write_outputs
    from vgdiag.runs.store import default_run_dir, prepare_run_dir

    refuse_under_torchrun("vgdiag compare")
    if cmd.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {cmd.jobs}")
    if not 0 < cmd.target_acc <= 1:
        raise UserError(f"--target-acc must be in (0, 1], got {cmd.target_acc}")
    if cmd.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {cmd.seeds}")
    if cmd.preset is not None or cmd.seeds != 1:
        raise UserError("--preset and --seeds are not supported by this version of compare")
    opts.validate()
    found, errors = discover_plugins()
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    names = resolve_plugin_names(cmd.plugins, found)
    plugin_opts = parse_plugin_options(cmd.plugin_opt)
    # Load once up front so bad data or model specs fail before any variant starts.
    from vgdiag.inputs.recipe import build_experiment, load_data

    bundle = load_data(opts)
    preflight(build_experiment(opts, bundle), bundle)
    out_dir = prepare_run_dir(cmd.out or default_run_dir("compare"))
    console = Console()
    console.print(f"[bold]vgdiag compare[/]: baseline + {len(names)} variant(s), "
                  f"{cmd.jobs} job(s); folder {out_dir}")
    interrupted = False
    if cmd.tui:
        from vgdiag.tui.app import run_compare_board  # Textual is loaded only here

        outcomes = run_compare_board(opts, names, plugin_opts, out_dir, jobs=cmd.jobs)
    else:
        def done(outcome: Any) -> None:
            state = "done" if outcome.applied else (
                "not applicable" if outcome.run_dir is None else "failed")
            console.print(f"  {outcome.name}: {state} ({outcome.seconds:.1f} s)")

        with StopOnSignal() as stopper:
            outcomes = compare_variants(opts, names, plugin_opts, out_dir, jobs=cmd.jobs,
                                        on_done=done, stop_event=stopper.event)
        interrupted = stopper.event.is_set()
        if interrupted:
            console.print("[yellow]interrupted:[/] the table covers the variants that ran")
    if not outcomes:
        raise typer.Exit(ExitCode.INTERRUPTED)
    command = "vgdiag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows = write_outputs(out_dir, outcomes, cmd.target_acc, command,
                         {k: str(v) for k, v in vars(opts).items()})
    console.print(rich_table(rows, cmd.target_acc))
    console.print(f"wrote {out_dir / 'compare.md'}, compare.json, compare.html")
    findings = [Finding.from_json(f) for o in outcomes[:1] if o.summary
                for f in o.summary.get("findings", [])]
    if interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)
    failed = [o for o in outcomes if o.run_dir is not None and not o.applied]
    if failed:
        raise typer.Exit(ExitCode.TRAINING_FAILED)
    raise typer.Exit(exit_code_for(findings, cmd.fail_on))
