"""compare's worker processes: jobs > 1 variants at once, robust to signals and deaths.

Each variant runs in its own spawned process (a fresh interpreter: no forked torch
state), started only while fewer than `jobs` run and no stop was asked. A worker
reports progress and its outcome through one queue. What can go wrong, and what
happens then:

- Ctrl-C reaches the whole process group: every worker stops its own training (its
  folder is marked interrupted) and reports; the parent starts no other variant.
- SIGTERM (or the board's stop) reaches only the parent: it forwards SIGTERM to the
  workers, which stop the same way.
- A worker dies without reporting (SIGKILL, the OOM killer, a crash in native code):
  its variant is FAILED with the cause, its folder is marked failed, the others go on.

Workers are started with SIGINT and SIGTERM blocked and unblock them once their
handlers are installed, so a signal during start-up stops the variant instead of
killing the interpreter with a traceback. Their stdout and stderr go to
`<out>/logs/<variant>.log`, never to a terminal the board may own.
"""

from __future__ import annotations

import contextlib
import os
import queue as queue_mod
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from vgdiag.inputs.recipe import RunOptions
from vgdiag.runs.compare import (
    ProgressFn,
    VariantOutcome,
    VariantSpec,
    VariantState,
    run_variant,
)

POLL_S = 0.2  # how often the parent checks for stops and dead workers
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_DIR = "logs"


def prepare_for_workers() -> None:
    """Start multiprocessing's resource tracker now, with the real stderr.

    The first spawn starts it and hands it `sys.stderr.fileno()`; under a full-screen
    app sys.stderr is a capture object whose fileno is not a real descriptor, and the
    spawn fails with "bad value(s) in fds_to_keep". Call this before such an app runs.
    """
    from multiprocessing import resource_tracker

    saved = sys.stderr
    sys.stderr = sys.__stderr__
    try:
        resource_tracker.ensure_running()
    finally:
        sys.stderr = saved


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the stop signals in this thread; a child started meanwhile inherits that."""
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _worker(opts: RunOptions, spec: VariantSpec, run_dir: Path, threads: int,
            log: Path, results: Any) -> None:
    """A worker process's body: train one variant, report through `results`."""
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as stream:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
    import torch

    torch.set_num_threads(threads)  # one BLAS pool per core: oversubscription thrashes
    try:
        outcome = run_variant(opts, spec, run_dir, stop_event=stop,
                              on_progress=lambda p: results.put(("progress", p)))
    except BaseException as exc:  # reported as this variant's failure, never lost
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        outcome = VariantOutcome(spec, VariantState.FAILED, message,
                                 run_dir if run_dir.exists() else None)
    results.put(("done", outcome))


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {exitcode} without a result"


def mark_failed(run_dir: Path, reason: str) -> dict[str, Any] | None:
    """Record `reason` in a folder whose writer died; its summary as it now reads."""
    from vgdiag.runs.folder import SUMMARY_FILE, write_json_atomic
    from vgdiag.runs.reader import read_run

    if not (run_dir / SUMMARY_FILE).exists():
        return None
    summary = dict(read_run(run_dir).summary)
    if summary.get("status") in (None, "running", "cut off"):
        summary.update(status="failed", error=reason, verdict=f"failed: {reason}")
        write_json_atomic(run_dir / SUMMARY_FILE, summary)
    return summary


def run_in_workers(
    opts: RunOptions,
    specs: list[VariantSpec],
    out_dir: Path,
    jobs: int,
    finished: Callable[[VariantOutcome], None],
    on_progress: ProgressFn | None,
    stop: threading.Event,
    no_new: threading.Event,
) -> None:
    """Run `specs` in up to `jobs` processes; call `finished` once per variant that ran."""
    ctx = get_context("spawn")
    results = ctx.Queue()
    threads = opts.threads or max(1, (os.cpu_count() or 1) // min(jobs, len(specs)))
    waiting = list(specs)
    running: dict[str, tuple[Any, VariantSpec, float]] = {}
    told_to_stop: set[str] = set()
    while waiting or running:
        while waiting and len(running) < jobs and not (stop.is_set() or no_new.is_set()):
            spec = waiting.pop(0)
            process = ctx.Process(
                target=_worker, name=f"vgdiag-{spec.name}", daemon=True,
                args=(opts, spec, out_dir / spec.name, threads,
                      out_dir / LOG_DIR / f"{spec.name}.log", results))
            with _signals_blocked():
                process.start()
            running[spec.name] = (process, spec, time.perf_counter())
        if not running:
            break  # stopped with variants still waiting: they are skipped
        if stop.is_set():
            for name, (process, _, _) in running.items():
                if name not in told_to_stop and process.is_alive():
                    told_to_stop.add(name)
                    with contextlib.suppress(OSError):
                        os.kill(process.pid, signal.SIGTERM)
        _drain(results, running, finished, on_progress, POLL_S)
        for name, (process, spec, started) in list(running.items()):
            if process.is_alive():
                continue
            process.join()
            _drain(results, running, finished, on_progress, 0.0)  # its last words
            if name not in running:
                continue
            del running[name]
            run_dir = out_dir / spec.name
            if stop.is_set() and name in told_to_stop:
                state, reason = VariantState.INTERRUPTED, "stopped before it reported"
            else:
                state, reason = VariantState.FAILED, _death(process.exitcode)
            summary = mark_failed(run_dir, reason) if state is VariantState.FAILED else None
            finished(VariantOutcome(spec, state, reason,
                                    run_dir if run_dir.exists() else None, summary,
                                    time.perf_counter() - started))
    results.close()


def _drain(results: Any, running: dict[str, Any], finished: Callable[[VariantOutcome], None],
           on_progress: ProgressFn | None, timeout: float) -> None:
    """Handle every message waiting in `results` (waiting up to `timeout` for the first)."""
    block = timeout > 0
    while True:
        try:
            kind, payload = results.get(block, timeout) if block else results.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        block = False
        if kind == "progress":
            if on_progress:
                on_progress(payload)
        else:
            entry = running.pop(payload.name, None)
            if entry is not None:
                entry[0].join(timeout=5)
            finished(payload)
