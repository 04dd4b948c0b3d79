"""`torchrun --nproc_per_node N -m vgdiag run ...`: one rank writes, every rank trains.

Set-up happens on rank 0 first (it may download the data and creates the run
folder), then on the others, each round ending in an exchange of errors so that bad
input found on one rank stops every rank with the same one line. Rank 0 shows the
progress and writes the one run folder; the other ranks train silently and print
only their own failure.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from vgdiag.cli.signals import StopOnSignal
from vgdiag.engine.status import RunStatus
from vgdiag.errors import ExitCode, UserError

# With NCCL a rank waiting for a lost peer is stuck in a device wait until the
# collective times out, and torchrun kills it 30 s after the peer's exit: if the main
# thread has not reported the failure this long after the peer's error appeared,
# rank 0 writes the folder as failed from a watching thread and exits.
LOST_PEER_GRACE_S = 10.0


class PeerWatch(threading.Thread):
    """On rank 0: ends the run when another rank failed and this one cannot notice."""

    def __init__(self, parallel: Any, store: Any, grace_s: float = LOST_PEER_GRACE_S,
                 poll_s: float = 1.0, exit: Callable[[int], None] = os._exit) -> None:
        super().__init__(name="vgdiag-peer-watch", daemon=True)
        self.parallel, self.store = parallel, store
        self.grace_s, self.poll_s, self.exit = grace_s, poll_s, exit
        self.done = threading.Event()  # set by the main thread when it is out of training
        self.t0 = time.perf_counter()

    def run(self) -> None:
        from vgdiag.engine.events import RunFailed

        while not self.done.wait(self.poll_s):
            cause = self.parallel.peer_failure(wait_s=0.0)
            if cause is None:
                continue
            if self.done.wait(self.grace_s):
                return  # the main thread got out of its collective and reported it
            summary = self.store.summary()
            self.store.handle(RunFailed(
                error=f"{cause} (rank {self.parallel.rank} was left waiting for it)",
                traceback="", layers=[], findings=self.store.findings,
                seconds=time.perf_counter() - self.t0, steps_done=int(summary["steps"])))
            self.store.close()
            print(f"vgdiag: rank {self.parallel.rank}: training failed: {cause}",
                  file=sys.stderr, flush=True)
            self.exit(int(ExitCode.TRAINING_FAILED))
            return


def train_data_parallel(
    prepare: Callable[[], tuple[Any, Any]],
    out: Path | None,
    device: str,
    fsdp: bool,
    console: Console,
    dashboard_wanted: bool,
) -> tuple[RunStatus, list[Any] | None]:
    """Train on this rank; returns how the run ended and, on rank 0, the findings."""
    from vgdiag.engine.distributed import DataParallel
    from vgdiag.runs.folder import default_run_dir
    from vgdiag.runs.store import RunStore

    parallel = DataParallel.from_torchrun(device, fsdp)
    experiment = bundle = store = path = None

    def set_up() -> str | None:
        nonlocal experiment, bundle, store, path
        try:
            experiment, bundle = prepare()
            train = dataclasses.replace(experiment.train, device=parallel.device)
            experiment = experiment.replace(train=train)
            parallel.check(experiment)  # before rank 0 makes a folder
            if parallel.is_main:
                path = out or default_run_dir(experiment.name)
                store = RunStore(path, experiment.name, bundle.num_classes)
        except UserError as exc:
            return str(exc)
        return None

    parallel.check_all(set_up() if parallel.is_main else None)
    parallel.check_all(None if parallel.is_main else set_up())
    assert experiment is not None and bundle is not None

    if not parallel.is_main:
        status = _train_silently(experiment, bundle, parallel)
        findings = None
    else:
        from vgdiag.cli.commands.run import _run_headless

        if dashboard_wanted:
            console.print("[dim]the dashboard runs in one process: progress is shown as text; "
                          "`vgdiag view RUN_DIR` follows the run live[/]")
        mode = "FSDP2" if parallel.fsdp else "DDP"
        watch = PeerWatch(parallel, store)
        watch.start()
        try:
            status, findings = _run_headless(
                experiment, bundle, store, console, parallel,
                intro=f", {mode} over {parallel.world_size} processes")
        finally:
            watch.done.set()
    if status != RunStatus.FAILED:
        parallel.close()  # after a failure a peer may be gone: leaving would wait for it
    return status, findings


def _train_silently(experiment: Any, bundle: Any, parallel: Any) -> RunStatus:
    """A rank other than 0: it trains its slices and prints only its own failure."""
    from vgdiag.engine.events import RunFailed, RunFinished
    from vgdiag.engine.trainer import run_training

    status = RunStatus.INTERRUPTED
    with StopOnSignal() as stopper:
        events = run_training(experiment, bundle, stopper.event, parallel)
        try:
            for event in events:
                if isinstance(event, RunFailed):
                    status = RunStatus.FAILED
                    print(f"vgdiag: rank {parallel.rank}: training failed: {event.error}",
                          file=sys.stderr)
                elif isinstance(event, RunFinished):
                    status = RunStatus(event.status)
        except KeyboardInterrupt:
            status = RunStatus.INTERRUPTED
        finally:
            events.close()
    return status
