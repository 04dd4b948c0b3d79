"""`vgdiag compare`: the baseline and each mitigation under the same budget."""

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
from vgdiag.errors import ExitCode, UserError


def compare(
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
    plugins: Annotated[str, typer.Option(
        "--plugins", help="'all' or a comma-separated list of plugin names.")] = "all",
    plugin_opt: PluginOptOpt = None,
    jobs: Annotated[int, typer.Option(
        help="Variants trained in parallel processes (they share the GPU if any).")] = 1,
    threads: ThreadsOpt = 0,
    target_acc: Annotated[float, typer.Option(
        help="Validation accuracy whose first epoch the table reports.")] = 0.8,
    out: Annotated[Path | None, typer.Option(
        help="Folder for compare.json/md/html and one run folder per variant "
        "[default: runs/<timestamp>-compare].")] = None,
    tui: Annotated[bool, typer.Option(
        "--tui", help="Watch the variants train in the dashboard and open each "
        "against the baseline.")] = False,
    fail_on: FailOnOpt = "none",
) -> None:
    """Train the baseline and each mitigation with the same seed, data and budget."""
    import shlex

    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import discover_plugins, resolve_plugin_names
    from vgdiag.runs.compare import compare_variants
    from vgdiag.runs.compare_report import rich_table, write_outputs
    from vgdiag.runs.store import default_run_dir, prepare_run_dir

    check_fail_on(fail_on)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if not 0 < target_acc <= 1:
        raise UserError(f"--target-acc must be in (0, 1], got {target_acc}")
    opts = run_options(
        model=model, model_args=model_arg, weights=weights, trust_pickle=trust_pickle,
        depth=depth, width=width, activation=activation, init=init, data=data,
        data_dir=data_dir, synthetic_size=synthetic_size, loss=loss, output_key=output_key,
        optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
        device=device, every=every, hist_every=hist_every, threads=threads,
    )
    opts.validate()
    found, errors = discover_plugins()
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)
    names = resolve_plugin_names(plugins, found)
    plugin_opts = parse_plugin_options(plugin_opt)
    # Load once up front so bad data or model specs fail before any variant starts.
    from vgdiag.inputs.recipe import build_experiment, load_data

    bundle = load_data(opts)
    preflight(build_experiment(opts, bundle), bundle)
    out_dir = prepare_run_dir(out or default_run_dir("compare"))
    console = Console()
    console.print(f"[bold]vgdiag compare[/]: baseline + {len(names)} variant(s), "
                  f"{jobs} job(s); folder {out_dir}")
    interrupted = False
    if tui:
        from vgdiag.tui.app import run_compare_board  # Textual is loaded only here

        outcomes = run_compare_board(opts, names, plugin_opts, out_dir, jobs=jobs)
    else:
        def done(outcome: Any) -> None:
            state = "done" if outcome.applied else (
                "not applicable" if outcome.run_dir is None else "failed")
            console.print(f"  {outcome.name}: {state} ({outcome.seconds:.1f} s)")

        with StopOnSignal() as stopper:
            outcomes = compare_variants(opts, names, plugin_opts, out_dir, jobs=jobs,
                                        on_done=done, stop_event=stopper.event)
        interrupted = stopper.event.is_set()
        if interrupted:
            console.print("[yellow]interrupted:[/] the table covers the variants that ran")
    if not outcomes:
        raise typer.Exit(ExitCode.INTERRUPTED)
    command = "vgdiag " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    rows = write_outputs(out_dir, outcomes, target_acc, command,
                         {k: str(v) for k, v in vars(opts).items()})
    console.print(rich_table(rows, target_acc))
    console.print(f"wrote {out_dir / 'compare.md'}, compare.json, compare.html")
    findings = [Finding.from_json(f) for o in outcomes[:1] if o.summary
                for f in o.summary.get("findings", [])]
    if interrupted:
        raise typer.Exit(ExitCode.INTERRUPTED)
    failed = [o for o in outcomes if o.run_dir is not None and not o.applied]
    if failed:
        raise typer.Exit(ExitCode.TRAINING_FAILED)
    raise typer.Exit(exit_code_for(findings, fail_on))
