"""optimizer.step(closure): what the optimizer calls in place of the user's closure.

A step taken as optimizer.step(closure) (LBFGS, or any optimizer given a closure that
runs zero_grad, forward and backward) has no gradients yet when the step's pre-hook
runs. There the probe hands the optimizer a ClosureStep in place of the closure: the
closure's first evaluation is the one measured (its forward pass and its gradients,
at the step's starting weights: what a plain `backward(); step()` loop measures), and
the probe is muted for the later ones (LBFGS's line search evaluates it again at other
weights). The update is measured across the whole step, as for any other.

Whatever the probe does, the user's closure is called with what the optimizer passes,
its result is returned as it is and its exceptions go through untouched. Once its step
is over (or the probe closed) a ClosureStep is only the user's closure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from vgdiag.engine.probe import Probe


class ClosureStep:
    """The user's closure for one optimizer step, measured at its first evaluation."""

    __slots__ = ("closure", "evaluations", "kept_before", "kept_grads", "probe")

    def __init__(self, probe: Probe, closure: Callable[..., Any]) -> None:
        self.probe = probe
        self.closure = closure
        self.evaluations = 0
        self.kept_before = False  # the weights before the update are kept
        self.kept_grads = False  # the first evaluation's gradients are safe from later ones

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.probe._closure_step is not self:
            return self.closure(*args, **kwargs)
        self.evaluations += 1
        if self.evaluations == 1:
            return self._first(args, kwargs)
        return self._again(args, kwargs)

    def _first(self, args: Any, kwargs: Any) -> Any:
        """The closure's first evaluation in its step: the one measured."""
        probe = self.probe
        if probe._in_flight:
            try:
                # This forward pass is the step's: the buffers start again, so that a
                # forward run between the last step and this one is not counted.
                probe._arm()
            except Exception as exc:
                probe._drop_sample(exc)
        result = self.closure(*args, **kwargs)
        if probe._in_flight and probe._closure_step is self:
            if probe._loss is None and isinstance(result, torch.Tensor):
                probe._loss = result.detach()
            # a lazy model got ready in this evaluation: its weights are kept now
            probe._read_grads(None if self.kept_before else self._keep_before)
        return result

    def _keep_before(self) -> None:
        self.probe._keep_before()
        self.kept_before = True

    def _again(self, args: Any, kwargs: Any) -> Any:
        """A later evaluation of the closure in the same step: the probe stays muted."""
        probe = self.probe
        measuring = probe._in_flight
        pieces = probe._grad_pieces
        if measuring and not self.kept_grads and pieces is not None:
            # The histograms read the first evaluation's gradients after the step; a
            # zero_grad(set_to_none=False) in this evaluation would overwrite them.
            self.kept_grads = True
            if pieces["grads"] is not None:
                try:
                    with torch.no_grad():
                        pieces["grads"] = [g.clone() for g in pieces["grads"]]
                except Exception as exc:
                    probe._drop_sample(exc)
                    measuring = False
        probe._in_flight = False  # every hook and observe_loss() check this first
        probe._reevaluating = True
        try:
            return self.closure(*args, **kwargs)
        finally:
            probe._reevaluating = False
            probe._in_flight = measuring and probe._closure_step is self
