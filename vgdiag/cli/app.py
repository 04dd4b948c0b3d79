"""The vgdiag command line (Typer). The dashboard is imported only where it opens."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console

try:  # typer >= 0.29 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer with click installed
    import click.exceptions as click_exc  # type: ignore[no-redef]

from vgdiag._version import __version__
from vgdiag.engine.records import Finding, severity_rank
from vgdiag.errors import ExitCode, UserError

app = typer.Typer(
    name="vgdiag",
    help="Find vanishing and exploding gradients in PyTorch models, see where they "
    "happen, and prove which fix works.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@dataclass
class _State:
    debug: bool = False


STATE = _State()
FAIL_ON_CHOICES = ("none", "info", "warning", "error")


def _version(value: bool) -> None:
    if value:
        print(f"vgdiag {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    STATE.debug = debug


# ----- shared options ----------------------------------------------------------------

ModelOpt = Annotated[str, typer.Option(
    "--model", "-m",
    help="builtin:mlp, path/to/file.py:Name, package.module:Name, or a TorchScript .pt/.ts.")]
ModelArgOpt = Annotated[list[str] | None, typer.Option(
    "--model-arg", help="key=value passed to the model's class or factory (repeatable).")]
WeightsOpt = Annotated[Path | None, typer.Option(
    "--weights", help="A state dict to load onto the model (read with weights_only=True).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle",
    help="Allow loading a fully pickled model. Unpickling runs arbitrary code from the "
    "file: use it only for files you trust.")]
DepthOpt = Annotated[int, typer.Option(help="Hidden layers of the built-in MLP.")]
WidthOpt = Annotated[int, typer.Option(help="Units per hidden layer of the built-in MLP.")]
ActivationOpt = Annotated[str, typer.Option(
    help="Built-in MLP activation: sigmoid | tanh | relu | leaky-relu | gelu.")]
InitOpt = Annotated[str, typer.Option(help="default | normal:STD | xavier | he.")]
DataOpt = Annotated[str, typer.Option(
    help="digits | fashion-mnist | mnist | synthetic, or file.py:factory.")]
DataDirOpt = Annotated[Path | None, typer.Option(
    help="Folder with the MNIST-family IDX files (downloaded there if absent).")]
SynthOpt = Annotated[int, typer.Option(help="Samples of the synthetic dataset.")]
LossOpt = Annotated[str, typer.Option(help="cross-entropy | mse | file.py:fn.")]
OutputKeyOpt = Annotated[str | None, typer.Option(
    help="For models returning a dict or tuple: the key or index of the prediction.")]
OptimizerOpt = Annotated[str, typer.Option(help="sgd | adam.")]
LrOpt = Annotated[float | None, typer.Option(
    help="Learning rate [default: adam 1e-3; sgd 0.01 as in the reference, 0.1 on digits].")]
EpochsOpt = Annotated[int | None, typer.Option(
    help="Epochs [default: digits and fashion-mnist/mnist 100, synthetic 10].")]
BatchOpt = Annotated[int | None, typer.Option(
    help="Batch size [default: digits 16, fashion-mnist/mnist 512, synthetic 64].")]
SeedOpt = Annotated[int, typer.Option(help="Seeds model init, data split and data order.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N.")]
EveryOpt = Annotated[int, typer.Option(help="Sample statistics every N-th step (step 0 always).")]
HistEveryOpt = Annotated[int, typer.Option(
    help="Histograms on every N-th sampled step (0 turns them off).")]
ThreadsOpt = Annotated[int, typer.Option(
    help="PyTorch CPU threads; 0 = automatic: 1 for models under 10M parameters, whose "
    "kernels are too small to gain from more, else PyTorch's default.")]
KeepGoingOpt = Annotated[bool, typer.Option(
    help="Go on training after a NaN/inf loss or gradient instead of stopping.")]
PluginOptOpt = Annotated[list[str] | None, typer.Option(
    "--plugin-opt", help="PLUGIN.OPTION=VALUE, e.g. weight-init.std=1.0 (repeatable; "
    "see `vgdiag plugins`).")]
FailOnOpt = Annotated[str, typer.Option(
    help="Exit 1 when a finding is at or above this severity: none | info | warning | error.")]
FsdpOpt = Annotated[bool, typer.Option(
    help="Under torchrun: shard the parameters with FSDP2 (fully_shard) instead of "
    "replicating them with DDP.")]


def _options(**kw: Any) -> Any:
    from vgdiag.inputs.recipe import RunOptions

    kw["model_args"] = list(kw.get("model_args") or [])
    return RunOptions(**kw)


def _check_fail_on(fail_on: str) -> str:
    if fail_on not in FAIL_ON_CHOICES:
        raise UserError(f"unknown --fail-on {fail_on!r}: use {' | '.join(FAIL_ON_CHOICES)}")
    return fail_on


def exit_code_for(findings: list[Finding], fail_on: str) -> ExitCode:
    if fail_on == "none":
        return ExitCode.OK
    limit = severity_rank(fail_on)
    if any(severity_rank(f.severity) >= limit for f in findings):
        return ExitCode.FINDINGS
    return ExitCode.OK


class _StopOnSignal:
    """SIGINT/SIGTERM ask the trainer to stop; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ----- run ----------------------------------------------------------------------------


@app.command()
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
    fsdp: FsdpOpt = False,
) -> None:
    """Train a model with the probe attached and diagnose its gradient flow.

    Under `torchrun --nproc_per_node N -m vgdiag run ...` it trains data-parallel.
    """
    from vgdiag.engine.distributed import launched_by_torchrun
    from vgdiag.inputs.recipe import build_experiment, load_data
    from vgdiag.runs.store import RunStore, default_run_dir

    _check_fail_on(fail_on)
    opts = _options(
        model=model, model_args=model_arg, weights=weights, trust_pickle=trust_pickle,
        depth=depth, width=width, activation=activation, init=init, data=data,
        data_dir=data_dir, synthetic_size=synthetic_size, loss=loss, output_key=output_key,
        optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, seed=seed,
        device=device, every=every, hist_every=hist_every, keep_going=keep_going,
        threads=threads, fsdp=fsdp,
    )
    opts.validate()
    plugin_opts = _plugin_opts(plugin_opt)

    def prepare() -> tuple[Any, Any]:
        bundle = load_data(opts)
        experiment = build_experiment(opts, bundle)
        _preflight(experiment, bundle)
        if plugin:
            from vgdiag.plugin_api import apply_plugins

            experiment = apply_plugins(experiment, plugin, plugin_opts)
            experiment = experiment.replace(name=f"{experiment.name}+{'+'.join(plugin)}")
        return experiment, bundle

    console = Console(stderr=False)
    use_tui = not headless and sys.stdout.isatty() and sys.stdin.isatty()
    if launched_by_torchrun():
        from vgdiag.cli.data_parallel import train_data_parallel

        status, store, path = train_data_parallel(prepare, out, opts.device, fsdp, console,
                                                  dashboard_wanted=use_tui)
        if store is None or path is None:  # not rank 0: rank 0 reports and applies --fail-on
            raise typer.Exit(_status_exit(status) or ExitCode.OK)
        _print_outcome(console, store, path)
        raise typer.Exit(_status_exit(status) or exit_code_for(store.findings, fail_on))
    if fsdp:
        raise UserError("--fsdp shards the model across the processes torchrun starts: "
                        "run `torchrun --nproc_per_node N -m vgdiag run --fsdp ...`")
    experiment, bundle = prepare()
    path = out or default_run_dir(experiment.name)
    store = RunStore(path, experiment.name, bundle.num_classes)
    if use_tui:
        status = _run_tui(experiment, bundle, store)
    else:
        status = _run_headless(experiment, bundle, store, console)
    _print_outcome(console, store, path)
    raise typer.Exit(_status_exit(status) or exit_code_for(store.findings, fail_on))


def _status_exit(status: str) -> ExitCode | None:
    """The exit code of a run that did not complete; None for a completed one."""
    return {"failed": ExitCode.TRAINING_FAILED,
            "interrupted": ExitCode.INTERRUPTED}.get(status)


def _preflight(experiment: Any, bundle: Any) -> None:
    """One batch forward before training: shape errors become one clear line."""
    if experiment.model_spec.startswith("builtin:"):
        return
    from vgdiag.inputs.shapecheck import check_shapes

    check_shapes(experiment.build_model(), bundle, experiment.notes.get("loss", ""),
                 experiment.output_key)


def _run_headless(experiment: Any, bundle: Any, store: Any, console: Console) -> str:
    from vgdiag.cli.headless import HeadlessSink
    from vgdiag.engine.events import RunFailed
    from vgdiag.engine.trainer import run_training

    console.print(f"[bold]vgdiag[/] training [cyan]{experiment.model_spec}[/] on "
                  f"[cyan]{bundle.name}[/] ({experiment.train.device}); run folder {store.path}")
    status = "completed"
    with _StopOnSignal() as stopper, store:
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


# ----- inspect ----------------------------------------------------------------------


@app.command()
def inspect(
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
    batch_size: BatchOpt = None,
    seed: SeedOpt = 42,
    device: DeviceOpt = "auto",
    fail_on: FailOnOpt = "none",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Pre-flight: one forward/backward at initialisation, the gradient table, no training."""
    import json

    from vgdiag.runs.inspection import inspect_at_init

    _check_fail_on(fail_on)
    opts = _options(
        model=model, model_args=model_arg, weights=weights, trust_pickle=trust_pickle,
        depth=depth, width=width, activation=activation, init=init, data=data,
        data_dir=data_dir, synthetic_size=synthetic_size, loss=loss, output_key=output_key,
        batch_size=batch_size, seed=seed, device=device,
    )
    result = inspect_at_init(opts)
    console = Console()
    if json_out:
        print(json.dumps(result.to_json(), indent=2))
    else:
        from vgdiag.cli.headless import findings_panel, layer_table
        from vgdiag.engine.diagnosis import verdict

        console.print(f"[bold]vgdiag inspect[/] {result.model_spec} on {result.data_name}: "
                      f"one batch of {result.batch_size} at initialisation, "
                      f"loss {result.record.loss:.4f}")
        console.print(layer_table(result.layers, result.record, result.record))
        console.print(findings_panel(result.findings, verdict(result.findings)))
    raise typer.Exit(exit_code_for(result.findings, fail_on))


# ----- report -----------------------------------------------------------------------


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `vgdiag run`.")],
    format: Annotated[str, typer.Option("--format", "-f", help="md | html | json.")] = "md",
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
    fail_on: FailOnOpt = "none",
) -> None:
    """Render a run folder as Markdown, a self-contained HTML page, or JSON."""
    from vgdiag.runs.report import render_report
    from vgdiag.runs.store import read_run

    _check_fail_on(fail_on)
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


# ----- plugins and compare ------------------------------------------------------------


def _plugin_opts(items: list[str] | None) -> dict[str, dict[str, str]]:
    if not items:
        return {}
    from vgdiag.plugin_api import parse_plugin_opts, validate_plugin_opts

    parsed = parse_plugin_opts(items)
    validate_plugin_opts(parsed)
    return parsed


@app.command("plugins")
def plugins_command() -> None:
    """List the mitigation plugins, their options and where each comes from."""
    from rich.table import Table

    from vgdiag.plugin_api import discover_plugins

    found, errors = discover_plugins()
    table = Table(title="Mitigation plugins", title_justify="left")
    for column in ("name", "summary", "options", "from"):
        table.add_column(column, overflow="fold")
    for name, plugin in found.items():
        options = "\n".join(f"{k}: {v}" for k, v in plugin.options.items()) or "-"
        table.add_row(name, plugin.summary, options, plugin.origin)
    console = Console()
    console.print(table)
    for error in errors:
        print(f"warning: {error}", file=sys.stderr)


@app.command()
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

    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import discover_plugins, resolve_plugin_names
    from vgdiag.runs.compare import compare_variants
    from vgdiag.runs.compare_report import rich_table, write_outputs
    from vgdiag.runs.store import default_run_dir, prepare_run_dir

    refuse_under_torchrun("vgdiag compare")
    _check_fail_on(fail_on)
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if not 0 < target_acc <= 1:
        raise UserError(f"--target-acc must be in (0, 1], got {target_acc}")
    opts = _options(
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
    plugin_opts = _plugin_opts(plugin_opt)
    # Load once up front so bad data or model specs fail before any variant starts.
    from vgdiag.inputs.recipe import build_experiment, load_data

    bundle = load_data(opts)
    _preflight(build_experiment(opts, bundle), bundle)
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

        with _StopOnSignal() as stopper:
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


# ----- view ---------------------------------------------------------------------------


@app.command()
def view(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by `vgdiag run`.")],
) -> None:
    """Replay a saved run folder in the dashboard."""
    from vgdiag.engine.distributed import refuse_under_torchrun
    from vgdiag.runs.store import read_run

    refuse_under_torchrun("the dashboard (vgdiag view)")

    run_data = read_run(run_dir)
    from vgdiag.tui.app import view_run  # Textual is loaded only here

    view_run(run_data)


# ----- entry point --------------------------------------------------------------------


def _one_line(message: str) -> str:
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors are one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    STATE.debug = "--debug" in args or bool(os.environ.get("VGDIAG_DEBUG"))
    try:
        result = app(args=args, prog_name="vgdiag", standalone_mode=False)
        return int(result) if isinstance(result, int) else 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except click_exc.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        print(f"vgdiag: error: {_one_line(exc.format_message())}{hint}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except UserError as exc:
        if STATE.debug:
            raise
        print(f"vgdiag: error: {_one_line(str(exc))}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except typer.Abort:
        print("vgdiag: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("vgdiag: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the user's code (or ours) raised outside training
        if STATE.debug:
            raise
        print(f"vgdiag: error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return int(ExitCode.TRAINING_FAILED)


if __name__ == "__main__":
    sys.exit(main())
