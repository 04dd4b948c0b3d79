"""vgdiag.watch: the probe for users who keep their own training loop."""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer

from vgdiag.diagnosis import DEFAULT_THRESHOLDS, Thresholds, diagnose
from vgdiag.history import History
from vgdiag.probe import Probe
from vgdiag.records import Finding, LayerInfo


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

    def findings(self, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> list[Finding]:
        """Diagnose what was recorded so far."""
        return diagnose(self.history.records(), self.layers, (), self.num_classes, thresholds)

    def observe_loss(self, loss) -> None:  # type: ignore[no-untyped-def]
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
    every: int = 10,
    hist_every: int = 10,
    num_classes: int = 0,
    max_records: int = 4096,
) -> Watch:
    """Attach a probe to `model` and follow `optimizer.step()` as the step boundary.

    Args:
        model: any nn.Module, already on its device.
        optimizer: steps mark sampled-step boundaries; without one call `w.step()`.
        every: sample every N-th step (step 0 always).
        hist_every: weight and gradient histograms on every N-th sampled step.
        num_classes: for classification, lets the diagnosis spot a loss stuck at
            ln(num_classes); give the loss with `w.observe_loss(loss)`.
        max_records: in-memory history bound; older records are decimated.
    """
    probe = Probe(model, optimizer, every=every, hist_every=hist_every, max_records=max_records)
    return Watch(probe, num_classes)
