"""`vgdiag inspect`: one forward/backward at initialisation."""

from __future__ import annotations

from typing import Annotated

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
    FailOnOpt,
    InitOpt,
    LossOpt,
    ModelArgOpt,
    ModelOpt,
    OutputKeyOpt,
    SeedOpt,
    SynthOpt,
    TrustPickleOpt,
    WeightsOpt,
    WidthOpt,
    run_options,
)


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

    check_fail_on(fail_on)
    opts = run_options(
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
