"""compare: the baseline and each mitigation, same data, data order and budget.

One engine drives every front end (the terminal table, the `compare --tui` board, the
HTML page): variants are `VariantSpec`s, each built from the same RunOptions and then
transformed by at most one plugin; progress comes back through a callback as
`VariantProgress` values; a `threading.Event` stops the work. Variants run one after
another in this process, or with jobs > 1 in worker processes (compare_workers): an
Experiment holds closures, so a worker rebuilds it from the picklable spec.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vgdiag.engine.events import EpochEnded, RunFailed, RunFinished, RunStarted
from vgdiag.engine.splits import DataBundle
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions, build_experiment, data_key, load_data

BASELINE = "baseline"
DEFAULT_TARGET_ACC = 0.8  # validation accuracy whose first epoch the table reports


class VariantState(str, enum.Enum):
    """Where a variant is; the one spelling of these words for every front end."""

    WAITING = "waiting"
    RUNNING = "running"
    DONE = "done"  # trained to the end of its budget
    FAILED = "failed"  # the run raised or its worker died (one that diverged is DONE:
    # its folder is completed, as `vgdiag run`'s is, and its row says "diverged")
    NOT_APPLICABLE = "not applicable"  # the plugin said why not; nothing trained
    INTERRUPTED = "interrupted"  # stopped by a signal or the user
    SKIPPED = "skipped"  # never started: the comparison was stopped first

    @property
    def finished(self) -> bool:
        return self not in (VariantState.WAITING, VariantState.RUNNING)


def variant_name(plugin: str | None, label: str | None = None, seed: int | None = None) -> str:
    """The one naming rule: folder, table row and board row of a variant.

    `label` (a preset's "weight-init-std10") or the plugin name or "baseline", then
    "-seed<N>" when the comparison runs several seeds.
    """
    base = label or plugin or BASELINE
    return base if seed is None else f"{base}-seed{seed}"


@dataclass(frozen=True)
class VariantSpec:
    """One variant to train: everything a worker process needs, all picklable."""

    group: str  # the variant without its seed: what the table aggregates over seeds
    plugin: str | None = None  # None: the baseline
    options: dict[str, str] = field(default_factory=dict)  # the plugin's options, as text
    overrides: dict[str, Any] = field(default_factory=dict)  # RunOptions fields to change
    seed: int | None = None  # init and data-order seed; None: the options' seed
    published: float | None = None  # a published test accuracy to show beside it

    @property
    def name(self) -> str:
        return variant_name(None, self.group, self.seed)

    def run_options(self, opts: RunOptions) -> RunOptions:
        return dataclasses.replace(opts, **self.overrides) if self.overrides else opts


def build_specs(
    plugins: Iterable[str],
    plugin_opts: dict[str, dict[str, str]] | None = None,
    *,
    seeds: Iterable[int] | None = None,
    extra: Iterable[VariantSpec] = (),
) -> list[VariantSpec]:
    """The baseline, one variant per plugin (plus `extra`), each for every seed given."""
    plugin_opts = plugin_opts or {}
    base = [VariantSpec(BASELINE)]
    base += [VariantSpec(p, p, dict(plugin_opts.get(p, {}))) for p in plugins]
    base += list(extra)
    seed_list = list(seeds) if seeds is not None else [None]
    many = len(seed_list) > 1
    return [dataclasses.replace(spec, seed=seed if many else spec.seed)
            for spec in base for seed in seed_list]


@dataclass
class VariantProgress:
    """A variant's state as it trains: what a progress row shows."""

    name: str
    state: VariantState
    epoch: int = 0
    total_epochs: int = 0
    val_acc: float | None = None
    val_loss: float | None = None
    seconds: float = 0.0  # since the variant started

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None before the first epoch)."""
        if self.epoch <= 0 or self.total_epochs <= 0 or self.state.finished:
            return None
        return self.seconds / self.epoch * max(self.total_epochs - self.epoch, 0)


@dataclass
class VariantOutcome:
    """One row of a comparison."""

    spec: VariantSpec
    state: VariantState
    reason: str | None = None  # why not applicable, or the failure's one line
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None  # summary.json of the variant's run
    seconds: float = 0.0  # wall time of the variant: its build and training, not the data's load
    steps: int = 0  # optimizer steps taken
    samples: int = 0  # training samples seen (counted by the trainer; an epoch cut
    # short by a non-finite loss counts the batches it took)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def options(self) -> dict[str, str]:
        return self.spec.options

    @property
    def trained(self) -> bool:
        """True when a run folder holds its training (done, failed or interrupted)."""
        return self.run_dir is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.spec.group,
            "plugin": self.spec.plugin,
            "seed": self.spec.seed,
            "state": self.state.value,
            "applied": self.state is not VariantState.NOT_APPLICABLE,
            "reason": self.reason,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "options": self.spec.options,
            "overrides": {k: str(v) for k, v in self.spec.overrides.items()},
            "seconds": self.seconds,
            "steps": self.steps,
            "samples": self.samples,
            "summary": self.summary,
        }


ProgressFn = Callable[[VariantProgress], None]


def run_variant(
    opts: RunOptions,
    spec: VariantSpec,
    run_dir: Path,
    *,
    stop_event: threading.Event | None = None,
    on_progress: ProgressFn | None = None,
    data_cache: dict[tuple[Any, ...], DataBundle] | None = None,
) -> VariantOutcome:
    """Build the baseline from `opts`, apply the spec's plugin, train, store.

    `data_cache` keeps loaded datasets between the variants of one process: nothing
    writes to a bundle's tensors (batches are copies), so variants can share it.
    """
    from vgdiag.engine.trainer import run_training
    from vgdiag.runs.reader import read_run
    from vgdiag.runs.store import RunStore

    stop = stop_event or threading.Event()
    opts = spec.run_options(opts)
    cache = {} if data_cache is None else data_cache
    key = data_key(opts)
    if key not in cache:
        cache[key] = load_data(opts)
    data = cache[key]
    # Timed from here: the dataset is loaded once per job, and its load must not make
    # the job's first variant look slower than the others.
    t0 = time.perf_counter()
    experiment = build_experiment(opts, data)
    if spec.seed is not None:  # the split stays the options' one: only init and order move
        experiment = experiment.replace(train=dataclasses.replace(experiment.train,
                                                                  seed=spec.seed))
    if spec.plugin is not None:
        from vgdiag.plugin_api import get_plugin

        chosen = get_plugin(spec.plugin)
        parsed = chosen.parse_options(spec.options)
        reason = chosen.applies(experiment, parsed)
        if reason is not None:
            return VariantOutcome(spec, VariantState.NOT_APPLICABLE, reason,
                                  seconds=time.perf_counter() - t0)
        experiment = chosen.transform(experiment, parsed)
    experiment = experiment.replace(name=spec.name)
    progress = VariantProgress(spec.name, VariantState.RUNNING)
    if on_progress:
        on_progress(dataclasses.replace(progress))
    error: str | None = None
    status = "failed"
    epochs = 0
    steps = 0
    samples: int | None = None
    with RunStore(run_dir, spec.name, data.num_classes) as store:
        for event in run_training(experiment, data, stop):
            store.handle(event)
            if isinstance(event, RunStarted):
                progress.total_epochs = event.total_epochs
            elif isinstance(event, EpochEnded):
                epochs += 1
                steps = event.record.steps
                progress.epoch = event.record.epoch
                progress.val_acc = event.record.val_acc
                progress.val_loss = event.record.val_loss
                progress.seconds = time.perf_counter() - t0
                if on_progress:
                    on_progress(dataclasses.replace(progress))
            elif isinstance(event, RunFailed):
                error, steps = event.error, event.steps_done
            elif isinstance(event, RunFinished):
                status, steps = event.status, event.steps_done
                samples = event.extra.get("samples_seen")
    state = (VariantState.FAILED if error is not None else
             VariantState.INTERRUPTED if status == "interrupted" else VariantState.DONE)
    summary = read_run(run_dir).summary
    return VariantOutcome(spec, state, error, run_dir, summary, time.perf_counter() - t0,
                          steps, epochs * len(data.train) if samples is None else samples)


def compare_variants(
    opts: RunOptions,
    specs: list[VariantSpec],
    out_dir: Path,
    *,
    jobs: int = 1,
    on_progress: ProgressFn | None = None,
    on_done: Callable[[VariantOutcome], None] | None = None,
    stop_event: threading.Event | None = None,
    no_new_event: threading.Event | None = None,
) -> list[VariantOutcome]:
    """Train every spec; one outcome per spec, in the specs' order.

    `stop_event` interrupts the variants in training (their folders are marked
    interrupted) and starts no other; `no_new_event` only starts no other, letting the
    ones in training finish. Variants never started come back SKIPPED.
    """
    stop = stop_event or threading.Event()
    no_new = no_new_event or threading.Event()
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise UserError(f"two variants have the same name: {', '.join(names)}")
    results: dict[str, VariantOutcome] = {}

    def finished(outcome: VariantOutcome) -> None:
        results[outcome.name] = outcome
        if on_done:
            on_done(outcome)

    if jobs == 1:
        data_cache: dict[tuple[Any, ...], DataBundle] = {}
        for spec in specs:
            if stop.is_set() or no_new.is_set():
                break
            finished(run_variant(opts, spec, out_dir / spec.name, stop_event=stop,
                                 on_progress=on_progress, data_cache=data_cache))
    else:
        from vgdiag.runs.compare_workers import run_in_workers

        run_in_workers(opts, specs, out_dir, jobs, finished, on_progress, stop, no_new)
    return [results.get(spec.name) or VariantOutcome(spec, VariantState.SKIPPED)
            for spec in specs]
