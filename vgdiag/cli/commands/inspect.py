"""`vgdiag inspect`: one forward/backward at initialisation."""

from __future__ import annotations

import typer
from rich.console import Console

from vgdiag.cli.exits import exit_code_for
from vgdiag.cli.options_typer import command
from vgdiag.inputs.options import TRAINING_ONLY, InspectOptions, RunOptions


@command((RunOptions, TRAINING_ONLY), InspectOptions, recipe=True)
def inspect(opts: RunOptions, cmd: InspectOptions) -> None:
    """Pre-flight: one forward/backward at initialisation, the gradient table, no training."""
    from vgdiag.cli.prepare import say_warnings
    from vgdiag.runs.folder import dumps
    from vgdiag.runs.inspection import inspect_at_init

    result = inspect_at_init(opts)
    say_warnings(result.warnings)  # on stderr: --json's stdout stays one document
    console = Console()
    if cmd.json_out:
        print(dumps(result.to_json(), indent=2))  # strict JSON: inf as 1e999
    else:
        from vgdiag.cli.headless import findings_panel
        from vgdiag.cli.layer_table import layer_table
        from vgdiag.engine.diagnosis import verdict

        console.print(f"[bold]vgdiag inspect[/] {result.model_spec} on {result.data_name}: "
                      f"one batch of {result.batch_size} at initialisation, "
                      f"loss {result.record.loss:.4f}")
        console.print(layer_table(result.layers, result.record, result.record))
        console.print(findings_panel(result.findings, verdict(result.findings)))
    raise typer.Exit(exit_code_for(result.findings, cmd.fail_on))
