"""compare: the baseline and each mitigation, same seed, data order and budget.

Every variant is built from the same RunOptions (so the same data split, seed and
epoch budget) and then transformed by one plugin. Variants run one after another in
this process, or with jobs > 1 in separate processes: an Experiment holds closures,
so a worker rebuilds it from the picklable options instead of receiving it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vgdiag.engine.events import RunFailed
from vgdiag.engine.gradflow import first_last_ratio
from vgdiag.errors import UserError
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data

BASELINE = "baseline"
DEFAULT_TARGET_ACC = 0.8  # validation accuracy that counts as "learned" for the table


@dataclass
class VariantOutcome:
    """One row of a comparison."""

    name: str  # "baseline" or the plugin name
    applied: bool  # False: the plugin does not apply (see reason) or the run failed
    reason: str | None = None  # why not applied, or the failure's one line
    run_dir: Path | None = None
    summary: dict[str, Any] | None = None  # summary.json of the variant's run
    seconds: float = 0.0  # wall time of the variant, loading and training
    options: dict[str, str] = field(default_factory=dict)  # plugin options used

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": None if self.name == BASELINE else self.name,
            "applied": self.applied,
            "reason": self.reason,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "options": self.options,
            "seconds": self.seconds,
            "summary": self.summary,
        }


def run_variant(
    opts: RunOptions,
    plugin: str | None,
    plugin_options: dict[str, str],
    run_dir: Path,
    threads: int = 0,
    stop_event: threading.Event | None = None,
) -> VariantOutcome:
    """Build the baseline from `opts`, apply `plugin` (None: baseline), train, store."""
    import torch

    from vgdiag.engine.trainer import run_training
    from vgdiag.runs.store import RunStore, read_run

    if threads > 0:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    name = plugin or BASELINE
    data = load_data(opts)
    experiment = build_experiment(opts, data)
    if plugin is not None:
        from vgdiag.plugin_api import get_plugin

        chosen = get_plugin(plugin)
        reason = chosen.why_not(experiment, plugin_options)
        if reason is not None:
            return VariantOutcome(name, False, reason, None, None,
                                  time.perf_counter() - t0, plugin_options)
        experiment = chosen.apply(experiment, plugin_options)
    experiment = experiment.replace(name=name)
    error = None
    with RunStore(run_dir, name, data.num_classes) as store:
        for event in run_training(experiment, data, stop_event):
            store.handle(event)
            if isinstance(event, RunFailed):
                error = event.error
    summary = read_run(run_dir).summary
    return VariantOutcome(name, error is None, error, run_dir, summary,
                          time.perf_counter() - t0, plugin_options)


def compare_variants(
    opts: RunOptions,
    plugins: list[str],
    plugin_opts: dict[str, dict[str, str]],
    out_dir: Path,
    *,
    jobs: int = 1,
    on_done: Callable[[VariantOutcome], None] | None = None,
    stop_event: threading.Event | None = None,
) -> list[VariantOutcome]:
    """Run the baseline and one variant per plugin; results in that order.

    Setting `stop_event` stops the variant training in this process (its folder is
    marked interrupted) and starts no further one; variants already handed to worker
    processes run to their end. Only the variants that ran are returned.
    """
    stop = stop_event or threading.Event()
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    names: list[str | None] = [None, *plugins]
    dirs = {name: out_dir / (name or BASELINE) for name in names}
    results: dict[str | None, VariantOutcome] = {}
    if jobs == 1:
        for name in names:
            if stop.is_set():
                break
            results[name] = run_variant(opts, name, plugin_opts.get(name or "", {}), dirs[name],
                                        stop_event=stop)
            if on_done:
                on_done(results[name])
    else:
        # Split the cores between the workers: oversubscribed BLAS threads only thrash.
        threads = opts.threads or max(1, (os.cpu_count() or 1) // min(jobs, len(names)))
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futures = {
                pool.submit(run_variant, opts, name, plugin_opts.get(name or "", {}),
                            dirs[name], threads): name
                for name in names
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    if future.cancelled():
                        continue
                    name = futures[future]
                    results[name] = future.result()
                    if on_done:
                        on_done(results[name])
                if stop.is_set():
                    for future in pending:
                        future.cancel()
    return [results[name] for name in names if name in results]


# ----- the comparison table -----------------------------------------------------------


def _ratio(summary: dict[str, Any] | None, key: str) -> float:
    """First/last grad_norm ratio of the layers a gradient reaches, from a summary."""
    if not summary:
        return math.nan
    values = [layer.get(key) for layer in summary.get("layers", [])
              if layer.get("trainable", True) and layer.get("used", True)]
    return first_last_ratio([float(v) if isinstance(v, (int, float)) else math.nan
                             for v in values])


def _epoch_reaching(summary: dict[str, Any] | None, target: float) -> int | None:
    for epoch in (summary or {}).get("epochs", []):
        acc = epoch.get("val_acc")
        if isinstance(acc, (int, float)) and acc >= target:
            return int(epoch["epoch"])
    return None


def comparison_rows(outcomes: list[VariantOutcome], target_acc: float) -> list[dict[str, Any]]:
    """One flat dict per variant: what the table, compare.md and CI gates read."""
    rows = []
    for o in outcomes:
        s = o.summary or {}
        last = (s.get("epochs") or [{}])[-1]
        test = s.get("test") or {}
        rows.append({
            "variant": o.name,
            "applied": o.applied,
            "reason": o.reason,
            "train_acc": last.get("train_acc"),
            "val_acc": last.get("val_acc"),
            "test_acc": test.get("acc"),
            "train_loss": last.get("train_loss"),
            "val_loss": last.get("val_loss"),
            "test_loss": test.get("loss"),
            "ratio_init": _ratio(s, "grad_norm_first"),
            "ratio_end": _ratio(s, "grad_norm_last"),
            "verdict": s.get("verdict", "not applicable" if not o.applied else ""),
            "epoch_to_target": _epoch_reaching(s, target_acc),
            "seconds": o.seconds,
        })
    return rows
