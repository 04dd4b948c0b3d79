"""vgdiag.watch: the probe for users who keep their own training loop.

Works the same on one process and under torch.distributed (started by torchrun):
every rank records, and `Watch.is_main` says which rank should write or print.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim import Optimizer

from vgdiag.engine.diagnosis import DEFAULT_THRESHOLDS, Thresholds, diagnose
from vgdiag.engine.experiment import DEFAULT_EVERY, DEFAULT_HIST_EVERY
from vgdiag.engine.history import History
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import Finding, LayerInfo
from vgdiag.engine.snapshots import SAMPLE_THRESHOLD


class Watch:
    """A probe on a user's model; its history and diagnosis outlive the `with` block."""

    def __init__(self, probe: Probe, num_classes: int = 0) -> None:
        self.probe = probe
        self.num_classes = num_classes
        self._layers: list[LayerInfo] = []

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

    def findings(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
        """Diagnose what was recorded so far."""
        return diagnose(self.history.records(), self.layers, (), self.num_classes, thresholds)

    def observe_loss(self, loss: torch.Tensor) -> None:
        """Record the step's loss with sampled steps (enables the stalled-loss finding)."""
        self.probe.observe_loss(loss)

    def step(self) -> None:
        """Mark a step's end when no optimizer was given (call after backward)."""
        self.probe.end_step()

    def close(self) -> None:
        """Remove every hook; the history stays."""
        self._layers = self.probe.layers
        self.probe.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch(
    model: nn.Module,
    optimizer: Optimizer | None = None,
    *,
    every: int = DEFAULT_EVERY,
    hist_every: int = DEFAULT_HIST_EVERY,
    num_classes: int = 0,
    max_records: int = 4096,
    distributed: str = "auto",
    snapshot_threshold: int = SAMPLE_THRESHOLD,
) -> Watch:
    """Attach a probe to `model` and follow `optimizer.step()` as the step boundary.

    Args:
        model: any nn.Module, already on its device; DDP, FSDP and torch.compile
            wrappers are fine (layers keep the names of the module inside).
        optimizer: steps mark sampled-step boundaries; without one call `w.step()`.
        every: sample every N-th step (step 0 always).
        hist_every: weight and gradient histograms on every N-th sampled step.
        num_classes: for classification, lets the diagnosis spot a loss stuck at
            ln(num_classes); give the loss with `w.observe_loss(loss)`.
        max_records: in-memory history bound; older records are decimated.
        distributed: "auto" sums per-layer squared norms across ranks when the
            parameters are sharded (FSDP, DTensor) and exchanges nothing otherwise
            (DDP has averaged the gradients already); "sharded" forces it, "none"
            turns it off. Every rank must call optimizer.step() the same number of
            times, as data-parallel training does anyway.
        snapshot_threshold: a parameter with more elements than this keeps a fixed
            sample of its coordinates instead of whole copies (bounded memory), and its
            weight_change and update_ratio are estimates; raise it for a model whose
            changes are concentrated in few coordinates (docs/PERFORMANCE.md).
    """
    probe = Probe(model, optimizer, every=every, hist_every=hist_every, max_records=max_records,
                  distributed=distributed, snapshot_threshold=snapshot_threshold)
    return Watch(probe, num_classes)
