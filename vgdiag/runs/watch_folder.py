"""vgdiag.watch: the engine's Watch, writing a run folder when given `out=`.

The folder is the one `vgdiag run` writes (the same RunStore consumes the same event
stream), so `report`, `view` and `report --fail-on` work on any training loop. Its
status is set however the loop ends: `close()` or the end of the `with` block
(completed), an exception (failed), Ctrl-C (interrupted), SIGTERM (interrupted,
then the signal does what it did before), or the interpreter exiting with the watch
still open. Under torch.distributed only rank 0 writes; the other ranks measure and
take part in the reductions.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim import Optimizer

from vgdiag.engine.environment import run_config
from vgdiag.engine.events import Event
from vgdiag.engine.experiment import watch_sampling
from vgdiag.engine.watch import ProbeOptions, Watch
from vgdiag.engine.watch import watch as engine_watch
from vgdiag.runs.store import RunStore

if TYPE_CHECKING:  # typing.Unpack is Python 3.11+; annotations are not evaluated
    from typing_extensions import Unpack


class ProbeSettings(ProbeOptions, total=False):
    """The engine watch's own keyword arguments, passed through as they are (their
    meaning is in ProbeOptions, their defaults in the Probe), plus the classes."""

    num_classes: int


class _FolderSink:
    """The run store, plus what finishes the folder if the loop never calls close()."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.watch: Watch | None = None
        self._old_term: Any = None
        self._guarding = False
        # A SIGTERM that arrives while the store writes an event waits for the write to
        # end: closing the folder from inside it would fold in a step whose record was
        # never written.
        self._writing = False
        self._term_pending: tuple[int, FrameType | None] | None = None
        self.exit_raised: tuple[object, int] | None = None  # see _ExitSpy

    def guard(self, watch: Watch) -> None:
        self.watch = watch
        atexit.register(self._at_exit)
        _ExitSpy.install(self)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        old = signal.getsignal(signal.SIGTERM)
        if old is signal.SIG_IGN or old is None:
            return  # the process ignores SIGTERM (or a non-Python handler owns it)
        self._old_term = old
        signal.signal(signal.SIGTERM, self._on_term)
        self._guarding = True

    def handle(self, event: Event) -> None:
        self._writing = True
        try:
            self.store.handle(event)
        finally:
            self._writing = False
            if self._term_pending is not None:  # even after a write that failed
                signum, frame = self._term_pending
                self._term_pending = None
                self._on_term(signum, frame)

    def close(self) -> None:
        atexit.unregister(self._at_exit)
        _ExitSpy.uninstall(self)
        if self._guarding and signal.getsignal(signal.SIGTERM) == self._on_term:
            signal.signal(signal.SIGTERM, self._old_term)
        self._guarding = False
        self.store.close()

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        watch, old = self.watch, self._old_term
        if watch is None:
            return
        if self._writing:
            self._term_pending = (signum, frame)
            return
        watch.interrupted = True
        chained = isinstance(getattr(old, "__self__", None), _FolderSink)  # another watch's
        if callable(old) and not chained:
            # The program handles SIGTERM itself (Lightning does): let it stop the loop;
            # close() will then say interrupted.
            old(signum, frame)
            return
        watch.close()
        if chained:
            old(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # end as SIGTERM would have without us

    def _at_exit(self) -> None:
        # The interpreter is exiting with the watch open: an uncaught exception is
        # in sys.last_value (set before atexit handlers run); a SystemExit never is,
        # so the sys.exit() that raised it said what it was.
        if self.watch is None:
            return
        error = getattr(sys, "last_value", None)
        if error is None and self.exit_raised is not None:
            status, at_step = self.exit_raised
            error = SystemExit(status) if at_step == self.watch.probe.step else None
        self.watch.close(error)


class _ExitSpy:
    """`sys.exit`, telling each open watch folder of the SystemExit it raises: a loop
    ending in `sys.exit(2)` outside a `with` block reaches the atexit handler with
    nothing to say how it ended, and would read `completed`. A folder takes it only
    if no step ran after it (a SystemExit caught and trained past ended nothing);
    `raise SystemExit` itself is not seen."""

    sinks: list[_FolderSink] = []
    _original: Any = None

    @classmethod
    def install(cls, sink: _FolderSink) -> None:
        cls.sinks.append(sink)
        if len(cls.sinks) == 1 and sys.exit is not cls._exit:
            cls._original = sys.exit
            sys.exit = cls._exit  # type: ignore[assignment]

    @classmethod
    def uninstall(cls, sink: _FolderSink) -> None:
        if sink in cls.sinks:
            cls.sinks.remove(sink)
        if not cls.sinks and sys.exit is cls._exit:  # another's wrapper stays
            sys.exit = cls._original

    @staticmethod
    def _exit(status: object = None) -> None:
        # The main thread's alone ends the program; the status, not the exception,
        # is kept (its traceback would hold the frames and their tensors alive).
        if threading.current_thread() is threading.main_thread():
            for sink in list(_ExitSpy.sinks):
                if sink.watch is not None:
                    sink.exit_raised = (status, sink.watch.probe.step)
        raise SystemExit(status)


def watch(
    model: nn.Module,
    optimizer: Optimizer | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    name: str | None = None,
    hparams: Mapping[str, Any] | None = None,
    total_epochs: int = 0,
    steps_per_epoch: int = 0,
    source: str = "watch",
    hook_optimizer: bool = True,
    **probe: Unpack[ProbeSettings],
) -> Watch:
    """Attach a probe to `model`; with `out`, record into a run folder there.

        with vgdiag.watch(model, optimizer, out="runs/mine", num_classes=10) as w:
            for epoch in range(epochs):
                for x, y in loader:
                    ...; w.observe_loss(loss); loss.backward(); optimizer.step()
                w.observe_epoch(val_loss=..., val_acc=...)   # optional
        # then: vgdiag report runs/mine, vgdiag view runs/mine

    Args:
        model: any nn.Module, already on its device; DDP, FSDP and torch.compile
            wrappers are fine (layers keep the names of the module inside).
        optimizer: its step() marks the step boundary (step(closure) too: measured
            at the closure's first evaluation); without one call `w.step()` after
            backward (or `w.before_update()` / `w.after_update()` around an update
            that is not a hookable optimizer.step(), such as a framework's wrapper).
        out: the run folder to write (created; it must be new or empty). None keeps
            the records in memory only (`w.history`).
        name: the run's name in reports [default: the folder's name].
        hparams: what else you know about the run, for config.json and the report
            (lr, batch_size, epochs, seed...).
        total_epochs, steps_per_epoch: the plan where known, for the dashboard's
            progress (0: unknown).
        source: what drove the loop, recorded in config.json (the integrations set it).
        hook_optimizer: False when something other than a hookable optimizer.step()
            updates the parameters (a framework, an optimizer that never calls its
            closure): the optimizer is then only
            described in config.json, and `w.before_update()` / `w.after_update()`
            mark each update.
        **probe: what the probe samples and keeps (`ProbeSettings`): every,
            sample_first, hist_every, num_classes, max_records (in memory; the folder
            keeps every record), distributed, snapshot_threshold, scaler; their meaning
            is that of `vgdiag.engine.watch.watch`, their defaults too but for every
            and sample_first: without `every`, the plan sets them
            (`vgdiag.engine.experiment.watch_sampling`).

    Returns:
        the Watch; `w.out` is the folder this process writes (None on ranks other
        than 0, and without `out`).
    """
    if "every" not in probe:
        sampling = watch_sampling(total_epochs * steps_per_epoch)
        probe["every"] = sampling["every"]
        if "sample_first" in sampling:
            probe.setdefault("sample_first", sampling["sample_first"])
    w = engine_watch(model, optimizer if hook_optimizer else None, **probe)
    w.probe.scaled_optimizer = optimizer  # not hooked, still known to the loss scaler
    if out is None or w.rank != 0:
        return w
    path = Path(out)
    run_name = name or path.name
    try:
        sink = _FolderSink(RunStore(path, run_name, w.num_classes))
    except BaseException:
        w.close()  # the probe is off again: a bad folder leaves the model as it was
        raise
    config = run_config(model, optimizer, name=run_name, every=w.probe.every,
                        hist_every=w.probe.hist_every, num_classes=w.num_classes,
                        world_size=w.world_size, source=source,
                        hparams=hparams, total_epochs=total_epochs,
                        steps_per_epoch=steps_per_epoch)
    w.attach(sink, config, total_epochs, steps_per_epoch, path)
    sink.guard(w)
    return w
