"""What `vgdiag compare` does between parsing its options and choosing its exit code.

The command line hands over plain values; this module resolves a preset, builds the
variant specs, runs the one compare engine with a live progress view (or the board),
and writes the outputs. Front-end choices (exit codes, signal handling) stay in the CLI.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import (
    VariantOutcome,
    VariantProgress,
    VariantSpec,
    VariantState,
    build_specs,
    compare_variants,
)

MAX_SEEDS = 20


@dataclass
class CompareRequest:
    """The compare options the command line gave, preset not yet applied."""

    run_fields: dict[str, Any]  # RunOptions fields given explicitly on the command line
    defaults: dict[str, Any]  # the command line's values of every other RunOptions field
    plugins: str | None = None  # "all", "a,b" or None (all, or the preset's)
    plugin_opts: dict[str, dict[str, str]] = field(default_factory=dict)
    preset: str | None = None
    seeds: int = 1
    jobs: int | None = None  # None: the preset's, else 1


def resolve(request: CompareRequest, available: dict[str, Any]
            ) -> tuple[RunOptions, list[VariantSpec], int]:
    """(options, specs, jobs) for a request: the preset's bundle under explicit options."""
    from vgdiag.plugin_api import check_plugin_opts_used, resolve_plugin_names

    if not 1 <= request.seeds <= MAX_SEEDS:
        raise UserError(f"--seeds must be between 1 and {MAX_SEEDS}, got {request.seeds}")
    if request.preset is not None:
        from vgdiag.runs.presets import get_preset

        preset = get_preset(request.preset)
        opts = preset.run_options(request.defaults, request.run_fields)
        names = (None if request.plugins is None else
                 resolve_plugin_names(request.plugins, available))
        specs = preset.specs(names, request.plugin_opts, request.run_fields)
        jobs = preset.jobs if request.jobs is None else request.jobs
    else:
        opts = RunOptions(**{**request.defaults, **request.run_fields})
        # an empty --plugins "" (an unset shell variable) is refused, not read as all
        names = resolve_plugin_names("all" if request.plugins is None else request.plugins,
                                     available)
        specs = build_specs(names, request.plugin_opts)
        jobs = 1 if request.jobs is None else request.jobs
    check_plugin_opts_used(request.plugin_opts, (s.plugin for s in specs if s.plugin),
                           "add {name} to --plugins")
    if request.seeds > 1:
        seeds = [opts.seed + i for i in range(request.seeds)]
        specs = [dataclasses.replace(s, seed=seed) for s in specs for seed in seeds]
    opts.validate()
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    return opts, specs, jobs


class LiveProgress:
    """One progress row per variant in the terminal while compare runs."""

    def __init__(self, console: Console, specs: list[VariantSpec]) -> None:
        self.console = console
        self.rows = {s.name: VariantProgress(s.name, VariantState.WAITING) for s in specs}
        self.lock = threading.Lock()
        self.live: Any = None

    def __enter__(self) -> LiveProgress:
        if self.console.is_terminal:
            from rich.live import Live

            from vgdiag.runs.compare_report import progress_table

            self.live = Live(progress_table(list(self.rows.values())), console=self.console,
                             refresh_per_second=4, transient=True)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def progress(self, update: VariantProgress) -> None:
        with self.lock:
            self.rows[update.name] = update
            self._show()

    def done(self, outcome: VariantOutcome) -> None:
        with self.lock:
            row = self.rows.get(outcome.name) or VariantProgress(outcome.name, outcome.state)
            self.rows[outcome.name] = dataclasses.replace(row, state=outcome.state,
                                                          seconds=outcome.seconds)
            why = f": {outcome.reason}" if outcome.reason else ""
            self.console.print(f"  {outcome.name}: {outcome.state.value}{why} "
                               f"({outcome.seconds:.1f} s)")
            self._show()

    def _show(self) -> None:
        if self.live is not None:
            from vgdiag.runs.compare_report import progress_table

            self.live.update(progress_table(list(self.rows.values())))


def run_headless(opts: RunOptions, specs: list[VariantSpec], out_dir: Path, jobs: int,
                 console: Console, stop: threading.Event) -> list[VariantOutcome]:
    with LiveProgress(console, specs) as live:
        return compare_variants(opts, specs, out_dir, jobs=jobs, on_progress=live.progress,
                                on_done=live.done, stop_event=stop)


def write_and_show(out_dir: Path, outcomes: list[VariantOutcome], target_acc: float,
                   command: str, opts: RunOptions, console: Console) -> list[dict[str, Any]]:
    from vgdiag.runs.compare_report import terminal_view, write_outputs

    rows = write_outputs(out_dir, outcomes, target_acc, command,
                         {k: str(v) for k, v in vars(opts).items()})
    console.print(terminal_view(rows, target_acc, console.width))
    console.print(f"wrote {out_dir / 'compare.md'}, compare.json, compare.html")
    return rows
