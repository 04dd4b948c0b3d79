"""`vgdiag run`: train with the probe, in the dashboard or headless."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from vgdiag.cli.exits import exit_code_for
from vgdiag.cli.options_typer import command
from vgdiag.cli.prepare import parse_plugin_options, preflight
from vgdiag.cli.signals import StopOnSignal
from vgdiag.errors import ExitCode, UserError
from vgdiag.inputs.options import RunCommandOptions, RunOptions


@command(RunOptions, RunCommandOptions, recipe=True)
def run(opts: RunOptions, cmd: RunCommandOptions) -> None:
    """Train a model with the probe attached and diagnose its gradient flow.

    Under `torchrun --nproc_per_node N -m vgdiag run ...` it trains data-parallel.
    """
    from vgdiag.engine.distributed import launched_by_torchrun
    from vgdiag.inputs.recipe import build_experiment, load_data
    from vgdiag.runs.store import RunStore, default_run_dir

    opts.validate()
    plugin_opts = parse_plugin_options(cmd.plugin_opt)

    def prepare() -> tuple[Any, Any]:
        bundle = load_data(opts)
        experiment = build_experiment(opts, bundle)
        preflight(experiment, bundle)
        if cmd.plugin:
            from vgdiag.plugin_api import apply_plugins

            experiment = apply_plugins(experiment, cmd.plugin, plugin_opts)
            experiment = experiment.replace(name=f"{experiment.name}+{'+'.join(cmd.plugin)}")
        return experiment, bundle

    console = Console(stderr=False)
    use_tui = not cmd.headless and sys.stdout.isatty() and sys.stdin.isatty()
    if launched_by_torchrun():
        from vgdiag.cli.data_parallel import train_data_parallel

        status, store, path = train_data_parallel(prepare, cmd.out, opts.device, cmd.fsdp,
                                                  console, dashboard_wanted=use_tui)
        if store is None or path is None:  # not rank 0: rank 0 reports and applies --fail-on
            raise typer.Exit(_status_exit(status) or ExitCode.OK)
        _print_outcome(console, store, path)
        raise typer.Exit(_status_exit(status) or exit_code_for(store.findings, cmd.fail_on))
    if cmd.fsdp:
        raise UserError("--fsdp shards the model across the processes torchrun starts: "
                        "run `torchrun --nproc_per_node N -m vgdiag run --fsdp ...`")
    experiment, bundle = prepare()
    path = cmd.out or default_run_dir(experiment.name)
    store = RunStore(path, experiment.name, bundle.num_classes)
    if use_tui:
        status = _run_tui(experiment, bundle, store)
    else:
        status = _run_headless(experiment, bundle, store, console)
    _print_outcome(console, store, path)
    raise typer.Exit(_status_exit(status) or exit_code_for(store.findings, cmd.fail_on))


def _status_exit(status: str) -> ExitCode | None:
    """The exit code of a run that did not complete; None for a completed one."""
    return {"failed": ExitCode.TRAINING_FAILED,
            "interrupted": ExitCode.INTERRUPTED}.get(status)


def _run_headless(experiment: Any, bundle: Any, store: Any, console: Console) -> str:
    from vgdiag.cli.headless import HeadlessSink
    from vgdiag.engine.events import RunFailed
    from vgdiag.engine.trainer import run_training

    console.print(f"[bold]vgdiag[/] training [cyan]{experiment.model_spec}[/] on "
                  f"[cyan]{bundle.name}[/] ({experiment.train.device}); run folder {store.path}")
    status = "completed"
    with StopOnSignal() as stopper, store:
        try:
            with HeadlessSink(console) as sink:
                for event in run_training(experiment, bundle, stopper.event):
                    store.handle(event)
                    sink.handle(event)
                    if isinstance(event, RunFailed):
                        status = "failed"
                        console.print(f"[red]training failed:[/] {event.error}")
        except KeyboardInterrupt:
            store.mark_interrupted()
    return "failed" if status == "failed" else store.status


def _run_tui(experiment: Any, bundle: Any, store: Any) -> str:
    from vgdiag.tui.app import run_dashboard  # Textual is loaded only here

    with store:
        return run_dashboard(experiment, bundle, store, title="vgdiag run")


def _print_outcome(console: Console, store: Any, path: Path) -> None:
    from vgdiag.cli.headless import epochs_table, findings_panel, layer_table
    from vgdiag.runs.store import read_run

    run_data = read_run(path)
    records = run_data.records
    console.print(epochs_table(run_data.epochs, run_data.summary.get("test")))
    console.print(layer_table(run_data.layers, records[0] if records else None,
                              records[-1] if records else None))
    console.print(findings_panel(run_data.findings, str(run_data.summary.get("verdict", ""))))
    status = run_data.status
    color = "green" if status == "completed" else "yellow"
    console.print(f"[{color}]{status}[/] in {run_data.summary.get('seconds', 0):.1f} s; "
                  f"run folder: {path}  (report: vgdiag report {path} --format html)")
