"""`vgdiag run`: train with the probe, in the dashboard or headless."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from vgdiag.cli.exits import exit_code_for_run
from vgdiag.cli.options_typer import command
from vgdiag.cli.prepare import preflight
from vgdiag.cli.signals import StopOnSignal
from vgdiag.engine.status import RunStatus
from vgdiag.errors import RunFolderError, UserError
from vgdiag.inputs.options import RunCommandOptions, RunOptions

if TYPE_CHECKING:  # records imports numpy, which `vgdiag --help` does without
    from vgdiag.engine.records import Finding


@command(RunOptions, RunCommandOptions, recipe=True)
def run(opts: RunOptions, cmd: RunCommandOptions) -> None:
    """Train a model with the probe attached and diagnose its gradient flow.

    Under `torchrun --nproc_per_node N -m vgdiag run ...` it trains data-parallel.
    """
    from vgdiag.inputs.recipe import build_experiment, load_data
    from vgdiag.plugin_api import check_plugin_opts_used, parse_plugin_opts, validate_plugin_opts
    from vgdiag.runs.folder import default_run_dir
    from vgdiag.runs.store import RunStore
    from vgdiag.torchrun_env import every_ranks_error, launched_by_torchrun

    try:  # the command line's own values: the same on every rank
        opts.check_values()
        plugin_opts = parse_plugin_opts(cmd.plugin_opt or [])
        check_plugin_opts_used(plugin_opts, cmd.plugin or [], "add --plugin {name}")
    except UserError as exc:
        raise every_ranks_error(str(exc)) from None
    # What each machine has (the files, the installed plugins): said by every rank.
    opts.validate()
    validate_plugin_opts(plugin_opts)

    def prepare() -> tuple[Any, Any]:
        bundle = load_data(opts)
        experiment = build_experiment(opts, bundle)
        preflight(experiment, bundle)
        if cmd.plugin:
            from vgdiag.plugin_api import apply_plugins

            experiment = apply_plugins(experiment, cmd.plugin, plugin_opts)
            experiment = experiment.replace(name=f"{experiment.name}+{'+'.join(cmd.plugin)}")
        return experiment, bundle

    from vgdiag.cli.headless import TerminalConsole

    console = TerminalConsole(stderr=False)
    use_tui = not cmd.headless and sys.stdout.isatty() and sys.stdin.isatty()
    if launched_by_torchrun():
        from vgdiag.cli.data_parallel import train_data_parallel

        status, found = train_data_parallel(prepare, cmd.out, opts.device, cmd.fsdp, console,
                                            dashboard_wanted=use_tui)
        # Rank 0 applies --fail-on; the other ranks exit by how the run ended.
        raise typer.Exit(exit_code_for_run(status, found or [],
                                           cmd.fail_on if found is not None else "none"))
    if cmd.fsdp:
        raise UserError("--fsdp shards the model across the processes torchrun starts: "
                        "run `torchrun --nproc_per_node N -m vgdiag run --fsdp ...`")
    experiment, bundle = prepare()
    path = cmd.out or default_run_dir(experiment.name)
    store = RunStore(path, experiment.name, bundle.num_classes)
    try:
        if use_tui:
            from vgdiag.cli.headless import print_ending

            status = _run_tui(experiment, bundle, store)
            findings = store.findings
            print_ending(console, store.run, store.path, verdict=True)
        else:
            status, findings = _run_headless(experiment, bundle, store, console)
    except KeyboardInterrupt:
        # A Ctrl-C before training took the folder over: interrupted, not cut off.
        store.close()
        raise
    raise typer.Exit(exit_code_for_run(status, findings, cmd.fail_on))


def _run_headless(
    experiment: Any, bundle: Any, store: Any, console: Console, parallel: Any = None,
    intro: str = "",
) -> tuple[RunStatus, list[Finding]]:
    from vgdiag.cli.headless import HeadlessSink, safe
    from vgdiag.engine.trainer import run_training

    sink = HeadlessSink(console, experiment.name, bundle.num_classes)
    sink._draw(lambda: console.print(
        f"[bold]vgdiag[/] training [cyan]{safe(experiment.model_spec)}[/] on "
        f"[cyan]{safe(bundle.name)}[/]{intro} ({experiment.train.device}; "
        f"{experiment.optimizer_name} lr {experiment.train.lr:g}, batch "
        f"{experiment.train.batch_size}); run folder "
        f"{safe(store.path)}"))
    folder_error: str | None = None
    with StopOnSignal() as stopper, store:
        events = run_training(experiment, bundle, stopper.event, parallel)
        try:
            with sink:
                for event in events:
                    store.handle(event)  # first: the folder decides how the run ended
                    sink.handle(event)
        except RunFolderError as exc:
            folder_error = str(exc)
            if not sink.run.finished:
                sink.handle(sink.run.failure(folder_error))
        except KeyboardInterrupt:  # a second Ctrl-C: stop at once, the folder says so
            store.mark_interrupted()
            sink.run.interrupt()
        finally:
            events.close()  # the trainer's cleanup runs: the probe's hooks come off
    sink.print_outcome(store.path)
    if folder_error is not None:
        print(f"vgdiag: error: {folder_error}", file=sys.stderr)
    return sink.run.status, sink.run.findings


def _run_tui(experiment: Any, bundle: Any, store: Any) -> RunStatus:
    from vgdiag.tui.app import run_dashboard  # Textual is loaded only here

    with store:
        status = run_dashboard(experiment, bundle, store, title="vgdiag run")
    return RunStatus.parse(status) or RunStatus.INTERRUPTED
