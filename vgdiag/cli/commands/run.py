"""`vgdiag run`: train with the probe, in the dashboard or headless."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from vgdiag.cli.exits import check_fail_on, exit_code_for
from vgdiag.cli.options_typer import (
    ActivationOpt,
    BatchOpt,
    DataDirOpt,
    DataOpt,
    DepthOpt,
    DeviceOpt,
    EpochsOpt,
    EveryOpt,
    FailOnOpt,
    HistEveryOpt,
    InitOpt,
    KeepGoingOpt,
    LossOpt,
    LrOpt,
    ModelArgOpt,
    ModelOpt,
    OptimizerOpt,
    OutputKeyOpt,
    PluginOptOpt,
    SeedOpt,
    SynthOpt,
    ThreadsOpt,
    TrustPickleOpt,
    WeightsOpt,
    WidthOpt,
    run_options,
)
from vgdiag.cli.prepare import parse_plugin_options, preflight
from vgdiag.cli.signals import StopOnSignal
from vgdiag.errors import ExitCode


def run(
    model: ModelOpt = "builtin:mlp",
    model_arg: ModelArgOpt = None,
    weights: WeightsOpt = None,
    trust_pickle: TrustPickleOpt = False,
    depth: DepthOpt = 7,
    width: WidthOpt = 128,
    activation: ActivationOpt = "sigmoid",
    init: InitOpt = "default",
    data: DataOpt = "digits",
    data_dir: DataDirOpt = None,
    synthetic_size: SynthOpt = 6000,
    loss: LossOpt = "cross-entropy",
    output_key: OutputKeyOpt = None,
    optimizer: OptimizerOpt = "sgd",
    lr: LrOpt = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    seed: SeedOpt = 42,
    device: DeviceOpt = "auto",
    every: EveryOpt = 25,
    hist_every: HistEveryOpt = 10,
    keep_going: KeepGoingOpt = False,
    threads: ThreadsOpt = 0,
    out: Annotated[Path | None, typer.Option(
        help="Run folder [default: runs/<timestamp>-<name>].")] = None,
    headless: Annotated[bool, typer.Option(
        help="No dashboard: progress bar and tables (the default off a terminal).")] = False,
    fail_on: FailOnOpt = "none",
    plugin: Annotated[list[str] | None, typer.Option(
        "--plugin", "-p", help="Apply a mitigation plugin before training (repeatable, "
        "applied in order; see `vgdiag plugins`).")] = None,
    plugin_opt: PluginOptOpt = None,
) -> None:
    """Train a model with the probe attached and diagnose its gradient flow."""
    from vgdiag.inputs.recipe import build_experiment, load_data
    from vgdiag.runs.store import RunStore, default_run_dir

    check_fail_on(fail_on)
    opts = run_options(
        model=model, model_args=model_arg, weights=weights, trust_pickle=trust_pickle,
        depth=depth, width=width, activation=activation, init=init, data=data,
        data_dir=data_dir, synthetic_size=synthetic_size, loss=loss, output_key=output_key,
        optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
        device=device, every=every, hist_every=hist_every, keep_going=keep_going,
        threads=threads,
    )
    opts.validate()
    plugin_opts = parse_plugin_options(plugin_opt)
    bundle = load_data(opts)
    experiment = build_experiment(opts, bundle)
    preflight(experiment, bundle)
    if plugin:
        from vgdiag.plugin_api import apply_plugins

        experiment = apply_plugins(experiment, plugin, plugin_opts)
        experiment = experiment.replace(name=f"{experiment.name}+{'+'.join(plugin)}")
    path = out or default_run_dir(experiment.name)
    store = RunStore(path, experiment.name, bundle.num_classes)
    console = Console(stderr=False)
    use_tui = not headless and sys.stdout.isatty() and sys.stdin.isatty()
    if use_tui:
        status = _run_tui(experiment, bundle, store)
    else:
        status = _run_headless(experiment, bundle, store, console)
    _print_outcome(console, store, path)
    if status == "failed":
        raise typer.Exit(ExitCode.TRAINING_FAILED)
    if status == "interrupted":
        raise typer.Exit(ExitCode.INTERRUPTED)
    raise typer.Exit(exit_code_for(store.findings, fail_on))



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
