"""Watch: the probe for users who keep their own training loop.

A Watch emits the same event stream as the trainer (RunStarted, StepSampled,
EpochEnded, then RunFinished or RunFailed) to an optional sink, which is how
`vgdiag.watch(..., out=DIR)` fills a run folder without the engine knowing about
folders. Without a sink the records stay in memory (`w.history`).

Works the same on one process and under torch.distributed (started by torchrun):
every rank measures, and takes part in the reductions; `Watch.is_main` says which
rank should write or print.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import torch
from torch import nn
from torch.optim import Optimizer

from vgdiag.engine import events as ev
from vgdiag.engine.diagnosis import DEFAULT_THRESHOLDS, LiveDiagnosis, Thresholds, diagnose
from vgdiag.engine.diagnosis_common import finite_step
from vgdiag.engine.gradflow import output_layer, output_units
from vgdiag.engine.history import History
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.status import RunStatus
from vgdiag.engine.tracebacks import failure_line
from vgdiag.engine.warn import tell

if TYPE_CHECKING:
    from typing_extensions import Unpack  # in typing from Python 3.11

EPOCH_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc")


class EventSink(Protocol):
    """Where a Watch sends its events (a run store); closed when the Watch ends."""

    def handle(self, event: ev.Event) -> None: ...

    def close(self) -> None: ...


class Watch:
    """A probe on a user's model; its history and diagnosis outlive the `with` block."""

    def __init__(self, probe: Probe, num_classes: int = 0) -> None:
        """Follow `probe`; events go nowhere until `attach` gives them a sink."""
        self.probe = probe
        self.num_classes = num_classes
        self.out: Path | None = None  # the run folder this process writes (None: memory only)
        self.epochs: list[EpochRecord] = []
        self.status: RunStatus | None = None  # how the watch ended; None while open
        self.interrupted = False  # set on a signal: close() then says "interrupted"
        self._layers: list[LayerInfo] = []
        self._sink: EventSink | None = None
        self._t0 = time.perf_counter()
        self._epoch_t0 = self._t0
        # Losses given to observe_loss since the last epoch, summed on the device so
        # a step never waits for it.
        self._loss_sum: torch.Tensor | None = None
        self._loss_count = 0
        self._loss_weight = 0.0  # the samples behind _loss_sum (1 per loss given without)
        self._live = LiveDiagnosis()
        self._classes_checked = num_classes <= 0
        self._warned_non_finite = False  # said once, when it happens
        probe.on_record = self._on_record  # events go nowhere until attach() gives a sink
        probe.epoch = 1  # the epoch in progress: one more than observe_epoch() calls

    def attach(
        self,
        sink: EventSink,
        config: Mapping[str, Any] | None = None,
        total_epochs: int = 0,
        steps_per_epoch: int = 0,
        out: Path | None = None,
    ) -> None:
        """Send the event stream to `sink` from now on, starting with RunStarted.

        Args:
            sink: receives the events; closed when the Watch ends.
            config: RunStarted's config (see `vgdiag.engine.environment.run_config`).
            total_epochs, steps_per_epoch: the plan, where the caller knows it (0: unknown).
            out: the folder the sink writes, for `w.out`.
        """
        self._sink = sink
        self.out = out
        self._emit(ev.RunStarted(dict(config or {}), steps_per_epoch, total_epochs))

    # ----- what was recorded ---------------------------------------------------
    @property
    def history(self) -> History:
        """Sampled steps in order: `.step`, `.loss`, `.layers[name].grad_norm`, ..."""
        return self.probe.history

    @property
    def layers(self) -> list[LayerInfo]:
        """Layers in depth order (input side first)."""
        return self.probe.layers if not self._layers else self._layers

    @property
    def rank(self) -> int:
        """This process's rank under torch.distributed (0 without it)."""
        return self.probe.rank

    @property
    def world_size(self) -> int:
        """Number of ranks under torch.distributed (1 without it)."""
        return self.probe.world_size

    @property
    def is_main(self) -> bool:
        """True on the rank that should write files and print (rank 0, or no distribution).

        Gradient and weight statistics are the same on every rank (DDP averages the
        gradients before the optimizer step; sharded norms are summed across ranks);
        the loss and activation statistics are those of this rank's own batch.
        """
        return self.probe.rank == 0

    @property
    def observed_losses(self) -> int:
        """How many losses observe_loss() was given since the last epoch ended."""
        return self._loss_count

    def findings(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
        """Diagnose what was recorded so far."""
        if self.history:
            self._check_classes(self.history[-1])
        return diagnose(self.history.records(), self.layers, self.epochs, self.num_classes,
                        thresholds)

    # ----- what the user's loop tells us ----------------------------------------
    def observe_loss(self, loss: torch.Tensor, samples: int | None = None) -> None:
        """Give the step's loss: recorded with sampled steps, averaged into the epoch's
        train_loss (enables the stalled-loss finding). With `samples` (the batch's size)
        the epoch's mean weights each loss by it, a per-sample mean where the last batch
        is short; several losses in one step (micro-batches) are recorded as their mean.

        Called inside the closure of `optimizer.step(closure)`, only the closure's first
        evaluation in each step counts (LBFGS evaluates it again in its line search, at
        other weights); a sampled closure step without one records the loss the closure
        returned.
        """
        if self.probe.reevaluating:
            return
        value = loss.detach()
        if value.dim():
            value = value.float().mean()
        self.probe.observe_loss(value)
        weight = float(samples) if samples else 1.0
        value = value.double() if weight == 1.0 else value.double() * weight  # every step
        self._loss_sum = value if self._loss_sum is None else self._loss_sum + value
        self._loss_count += 1
        self._loss_weight += weight

    def observe_epoch(
        self,
        train_loss: float | None = None,
        train_acc: float | None = None,
        val_loss: float | None = None,
        val_acc: float | None = None,
    ) -> EpochRecord:
        """End an epoch; the numbers not given are left out (NaN, `null` in JSON).

        train_loss defaults to the mean of the losses given to observe_loss() during
        the epoch. Under torch.distributed each number is averaged over the ranks
        that gave it, so every rank must call this the same number of times, as it
        calls optimizer.step().
        """
        if train_loss is None and self._loss_count:
            assert self._loss_sum is not None
            train_loss = float(self._loss_sum) / self._loss_weight
        values = self._mean_over_ranks([train_loss, train_acc, val_loss, val_acc])
        now = time.perf_counter()
        record = EpochRecord(
            epoch=len(self.epochs) + 1,
            **{k: math.nan if v is None else float(v) for k, v in zip(EPOCH_KEYS, values)},
            seconds=now - self._epoch_t0,
            steps=self.probe.step,
            stage="train",
        )
        self.epochs.append(record)
        self._epoch_t0 = now
        self._loss_sum, self._loss_count, self._loss_weight = None, 0, 0.0
        self.probe.epoch = len(self.epochs) + 1
        if self._sink is not None:
            findings = self._live.findings(self.history, self.layers, self.epochs,
                                           self.num_classes)
            self._emit(ev.EpochEnded(record, findings))
        return record

    def step(self) -> None:
        """Mark a step's end when no optimizer was given (call after backward)."""
        self.probe.end_step()

    def before_update(self) -> None:
        """Without an optimizer: call after backward, before the parameters change.

        For updates the watch cannot hook as optimizer.step() (a framework's wrapper or
        its own closure around the step); `optimizer.step(closure)` on the optimizer
        given to the watch is measured exactly without these.
        """
        self.probe.before_update()

    def after_update(self) -> None:
        """Without an optimizer: call once the parameters have been updated."""
        self.probe.after_update()

    # ----- ending -----------------------------------------------------------------
    def close(self, error: BaseException | None = None) -> None:
        """Remove every hook and end the run; the history stays.

        `error` is what ended the loop, if anything: KeyboardInterrupt (or a signal
        seen before) marks the run interrupted, an exception marks it failed.
        """
        if self.status is not None:
            return
        self._layers = self.probe.layers
        self.probe.close()
        status = _status_for(error, self.interrupted)
        self.status = status
        if self._sink is None:
            return
        findings = self.findings()
        seconds = time.perf_counter() - self._t0
        if status == RunStatus.FAILED:
            assert error is not None
            self._emit(ev.RunFailed(
                error=failure_line(error),  # as `vgdiag run` says it, file:line
                traceback="".join(traceback.format_exception(type(error), error,
                                                             error.__traceback__)),
                layers=self._layers, findings=findings, seconds=seconds,
                steps_done=self.probe.step,
            ))
        else:
            self._emit(ev.RunFinished(status=status, layers=self._layers, test=None,
                                   findings=findings, seconds=seconds,
                                   steps_done=self.probe.step))
        sink, self._sink = self._sink, None
        try:
            sink.close()
        except Exception as exc:  # the user's training must not fail for our files
            tell(f"vgdiag: could not finish the run folder: {exc}", stacklevel=2)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close(exc)

    # ----- internals ----------------------------------------------------------------
    def _check_classes(self, record: StepRecord) -> None:
        """Warn once where num_classes disagrees with the output layer's outputs: the
        stall the diagnosis reads against ln(num_classes) would be the wrong one."""
        if self._classes_checked:
            return
        self._classes_checked = True
        layers = self.layers
        name = output_layer(record, layers)
        # Only where the output layer is the model's last: behind a head the probe
        # cannot size (weight_norm's weight_g/weight_v) stands a hidden layer.
        info = layers[-1] if layers and layers[-1].name == name else None
        units = output_units(info) if info is not None else None
        if (units is None or units == self.num_classes or (units == 1 and self.num_classes == 2)
                or self.rank != 0):
            return
        tell(
            f"vgdiag: num_classes={self.num_classes}, but the output layer {name} "
            f"({info.kind if info else '?'}) has {units} outputs: a stalled loss is read "
            f"against ln({self.num_classes}); give num_classes={units} if the model "
            "classifies into that many", stacklevel=user_stacklevel())

    def _check_finite(self, record: StepRecord) -> None:
        """Warn once, as it happens, where a sampled step's gradients (or loss, or
        activations) are not finite: a loop may otherwise train on NaN weights for
        the rest of its run before the diagnosis says so at the end."""
        if self._warned_non_finite or finite_step(record) or self.rank != 0:
            return
        self._warned_non_finite = True
        bad = [n or "<root>" for n, s in record.layers.items() if s.grad_non_finite]
        where = f" (gradient of {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})" \
            if bad else ""
        tell(
            f"vgdiag: step {record.step} is not finite{where}: training diverged, and "
            "every update from here on spreads NaN or inf through the weights; a lower "
            "learning rate is often enough (the non_finite finding says more)",
            stacklevel=user_stacklevel())

    def _on_record(self, record: StepRecord) -> None:
        # Called in the optimizer's post-step hook, before the probe counts the step.
        self._check_classes(record)
        self._check_finite(record)
        if self._sink is not None:
            self._emit(ev.StepSampled(record, self.probe.layers, self.probe.step + 1,
                                      time.perf_counter() - self._t0))

    def _emit(self, event: ev.Event) -> None:
        if self._sink is None:
            return
        try:
            self._sink.handle(event)
        except Exception as exc:  # never break the user's training for our files
            tell(f"vgdiag: stopped writing the run folder: {exc}", stacklevel=3)
            sink, self._sink = self._sink, None
            with contextlib.suppress(Exception):  # reported; the folder reads as cut off
                sink.close()

    def _mean_over_ranks(self, values: list[float | None]) -> list[float | None]:
        dist = torch.distributed
        if self.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return values
        device = (torch.device("cuda", torch.cuda.current_device())
                  if dist.get_backend() == "nccl" else torch.device("cpu"))
        given = [v if v is not None and math.isfinite(v) else None for v in values]
        vector = torch.tensor([0.0 if v is None else v for v in given]
                              + [float(v is not None) for v in given],
                              dtype=torch.float64, device=device)
        dist.all_reduce(vector)
        n = len(values)
        sums, counts = vector[:n].tolist(), vector[n:].tolist()
        return [s / c if c else None for s, c in zip(sums, counts)]


# Folders, not name prefixes: torchvision or a user's vgdiag_demo.py are outside.
_INSIDE = tuple(str(p) + os.sep for p in (Path(__file__).resolve().parents[1],
                                          Path(torch.__file__).resolve().parent))


def user_stacklevel() -> int:
    """The stacklevel that points a warning at the first frame outside vgdiag and torch
    (the user's loop), from the function calling warnings.warn."""
    level = 2
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_code.co_filename.startswith(_INSIDE):
        level += 1
        frame = frame.f_back
    return level


def _status_for(error: BaseException | None, interrupted: bool) -> RunStatus:
    # The loop is the user's own program: its sys.exit(0) is a normal end of it.
    if isinstance(error, KeyboardInterrupt) or (interrupted and error is None):
        return RunStatus.INTERRUPTED
    if isinstance(error, SystemExit) and error.code in (0, None):
        return RunStatus.INTERRUPTED if interrupted else RunStatus.COMPLETED
    if error is not None:
        return RunStatus.INTERRUPTED if interrupted else RunStatus.FAILED
    return RunStatus.COMPLETED


class ProbeOptions(TypedDict, total=False):
    """What a watched loop's probe is given, besides the model and optimizer."""

    every: int  # sample every N-th step (step 0 always)
    hist_every: int  # weight and gradient histograms on every N-th sampled step
    max_records: int  # in-memory history bound; older records are decimated
    # "auto" sums per-layer squared norms across ranks when the parameters are sharded
    # (FSDP, DTensor) and exchanges nothing otherwise (DDP has averaged the gradients
    # already); "sharded" forces it, "none" turns it off. Every rank must call
    # optimizer.step() the same number of times, as data-parallel training does anyway.
    distributed: str
    # A parameter with more elements than this keeps a fixed sample of its coordinates
    # instead of whole copies (bounded memory), and its weight_change and update_ratio
    # are estimates; raise it for a model whose changes are concentrated in few
    # coordinates (docs/PERFORMANCE.md).
    snapshot_threshold: int
    # The loop's torch.amp.GradScaler: the probe divides what backward measured by its
    # scale. Found by itself where scaler.step(optimizer) runs the watched optimizer;
    # give it where the update is marked by hand (w.before_update()).
    scaler: Any
    sample_first: int  # every one of the first N steps is sampled too


def watch(
    model: nn.Module,
    optimizer: Optimizer | None = None,
    *,
    num_classes: int = 0,
    **options: Unpack[ProbeOptions],
) -> Watch:
    """Attach a probe to `model` and follow `optimizer.step()` as the step boundary.

    This is the engine's watch: its events go to a sink once `Watch.attach` gives it
    one. Users call `vgdiag.watch`, which adds `out=` (a run folder) on top of it.

    Args:
        model: any nn.Module, already on its device; DDP, FSDP and torch.compile
            wrappers are fine (layers keep the names of the module inside).
        optimizer: steps mark sampled-step boundaries; without one call `w.step()`
            (or `w.before_update()` and `w.after_update()` around the update).
            `optimizer.step(closure)` (LBFGS) is measured at the closure's first
            evaluation in the step: the gradients and forward pass at the step's
            starting weights; the update across the whole step.
        num_classes: for classification, lets the diagnosis spot a loss stuck at
            ln(num_classes); give the loss with `w.observe_loss(loss)`.
        **options: the probe's (`ProbeOptions`: every, sample_first, hist_every,
            max_records, distributed, snapshot_threshold, scaler), with the Probe's
            defaults.
    """
    return Watch(Probe(model, optimizer, **options), num_classes)
