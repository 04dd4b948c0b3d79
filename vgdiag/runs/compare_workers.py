"""compare's worker processes: jobs > 1 variants at once, robust to signals and deaths.

Up to `jobs` spawned processes (fresh interpreters: no forked torch state) each train
one variant at a time, taking the next from the parent until none is left or a stop
was asked; the costliest variants go first. A worker pays for its interpreter, torch
and the dataset once, not once per variant. Workers report progress and outcomes
through one queue. What can go wrong, and what happens then:

- Ctrl-C reaches the whole process group: every worker stops its own training (its
  folder is marked interrupted) and reports; the parent starts no other variant.
- SIGTERM (or the board's stop) reaches only the parent: it forwards SIGTERM to the
  workers, which stop the same way.
- A worker dies without reporting (SIGKILL, the OOM killer, a crash in native code):
  its variant is FAILED with the cause, its folder is marked failed, a new worker
  takes its place and the others go on.

Workers are started with SIGINT and SIGTERM blocked and unblock them once their
handlers are installed, so a signal during start-up stops the variant instead of
killing the interpreter with a traceback. Their stdout and stderr go to
`<out>/logs/<variant>.log` (`logs/worker.log` between variants), never to a terminal
the board may own.
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
from dataclasses import dataclass
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


def _redirect_output(log: Path) -> None:
    """This process's stdout and stderr into `log` (appended), at the descriptor level."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as stream:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)


def _worker(opts: RunOptions, threads: int, log_dir: Path, inbox: Any, results: Any) -> None:
    """A worker process's body: train the variants handed to it, one at a time.

    One process trains several variants so that the interpreter, torch and the
    dataset load once per job rather than once per variant (seconds each on a small
    CPU). It reports ("started", name) on taking a variant, its progress, and
    ("done", outcome); None in `inbox`, or a stop signal, ends it.
    """
    stop = threading.Event()
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda *_: stop.set())
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    _redirect_output(log_dir / "worker.log")
    import torch

    torch.set_num_threads(threads)  # one BLAS pool per core: oversubscription thrashes
    data_cache: dict[tuple[Any, ...], Any] = {}
    while not stop.is_set():
        task = inbox.get()
        if task is None:
            return
        spec, run_dir = task
        _redirect_output(log_dir / f"{spec.name}.log")
        print(f"vgdiag compare worker {os.getpid()}: {spec.name}", flush=True)
        results.put(("started", spec.name))
        try:
            outcome = run_variant(opts, spec, run_dir, stop_event=stop, data_cache=data_cache,
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


@dataclass
class _Job:
    """One worker process, and the variant it was handed (None while idle)."""

    process: Any
    inbox: Any
    spec: VariantSpec | None = None
    began: bool = False  # it said "started" for `spec`
    since: float = 0.0
    released: bool = False  # sent None: it ends instead of taking work
    signalled: bool = False  # sent SIGTERM after a stop


def longest_first(specs: list[VariantSpec]) -> list[VariantSpec]:
    """`specs` in the order to start them: the costliest plugins' first, else as given."""
    from vgdiag.plugin_api import get_plugin

    def cost(spec: VariantSpec) -> float:
        return 1.0 if spec.plugin is None else get_plugin(spec.plugin).relative_cost

    return sorted(specs, key=cost, reverse=True)  # stable: equal costs keep their order


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
    waiting = longest_first(specs)
    pool: list[_Job] = []

    def start_job() -> None:
        inbox = ctx.SimpleQueue()
        process = ctx.Process(target=_worker, name="vgdiag-compare-worker", daemon=True,
                              args=(opts, threads, out_dir / LOG_DIR, inbox, results))
        with _signals_blocked():
            process.start()
        pool.append(_Job(process, inbox))

    def on_message(kind: str, payload: Any) -> None:
        if kind == "progress":
            if on_progress:
                on_progress(payload)
            return
        name = payload if kind == "started" else payload.name
        job = next((j for j in pool if j.spec is not None and j.spec.name == name), None)
        if job is None:
            return
        if kind == "started":
            job.began = True
        else:
            job.spec, job.began = None, False
            finished(payload)

    while True:
        starting = not (stop.is_set() or no_new.is_set())
        for job in pool:
            if job.spec is not None or job.released:
                continue
            if waiting and starting:
                job.spec, job.since = waiting.pop(0), time.perf_counter()
                job.inbox.put((job.spec, out_dir / job.spec.name))
            else:
                job.released = True
                job.inbox.put(None)  # nothing left for it: let it end
        active = [j for j in pool if not j.released]
        busy = sum(job.spec is not None for job in active)
        while starting and waiting and len(active) < min(jobs, busy + len(waiting)):
            start_job()  # the first jobs, or one in place of a worker that died
            active.append(pool[-1])
        if not pool:
            break  # done, or stopped with variants still waiting: they are skipped
        if stop.is_set():
            for job in pool:
                if job.spec is not None and not job.signalled:
                    job.signalled = True
                    with contextlib.suppress(OSError):
                        os.kill(job.process.pid, signal.SIGTERM)
        _drain(results, on_message, POLL_S)
        for job in [j for j in pool if not j.process.is_alive()]:
            job.process.join()
            _drain(results, on_message, 0.0)  # its last words
            pool.remove(job)
            if job.spec is None:
                continue
            if not job.began:  # it ended before taking the variant: give it to another
                waiting.insert(0, job.spec)
                continue
            run_dir = out_dir / job.spec.name
            if stop.is_set() and job.signalled:
                state, reason = VariantState.INTERRUPTED, "stopped before it reported"
            else:
                state, reason = VariantState.FAILED, _death(job.process.exitcode)
            summary = mark_failed(run_dir, reason) if state is VariantState.FAILED else None
            finished(VariantOutcome(job.spec, state, reason,
                                    run_dir if run_dir.exists() else None, summary,
                                    time.perf_counter() - job.since))
    results.close()


def _drain(results: Any, handle: Callable[[str, Any], None], timeout: float) -> None:
    """Handle every message waiting in `results` (waiting up to `timeout` for the first)."""
    block = timeout > 0
    while True:
        try:
            kind, payload = results.get(block, timeout) if block else results.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        block = False
        handle(kind, payload)
