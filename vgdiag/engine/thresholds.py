"""The named limits every verdict and every health colour is read against."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """Named limits of the diagnosis; override any with Thresholds(field=value)."""

    # Each sigmoid layer divides the gradient by ~4 at best: three orders of magnitude
    # between the input and output layers leaves the input side effectively frozen.
    vanishing_error: float = 1e-3
    vanishing_warning: float = 1e-2  # two orders: the first layer learns 100x slower
    exploding_warning: float = 1e2  # gradient grows toward the input (std-10 init)
    exploding_error: float = 1e4
    # dLoss/dx at the first time step against the last: the same orders as across layers.
    through_time_warning: float = 1e-2
    through_time_error: float = 1e-3
    stall_tolerance: float = 0.01  # loss above 99% of ln(classes) = no better than chance
    stall_min_steps: int = 50  # optimizer steps before a loss at chance can be called stalled
    stall_min_epochs: int = 3  # ... or this many epochs at chance, however short
    # ||dW|| / ||W|| per step: ~1e-3 is a net that learns; with a stalled loss, updates
    # under 1e-4 of every layer's norm get nowhere in any budget (a learning rate too low).
    tiny_update: float = 1e-4
    # A first/last gradient ratio above the vanishing limit but under this is weakened:
    # a stall beside it may still be the gradient's doing (the gradient fixes stay).
    weakened_ratio: float = 0.1
    frozen_change_ratio: float = 1e-2  # input-side weights move <1% as much as output-side
    frozen_change_max: float = 0.1  # ... and under 10% of their own initial norm
    # ||W - W0|| / ||W0||: a layer that moved 1e3x its initial norm was thrown off by its
    # updates (a learning rate too large for its gradients), not trained.
    blown_up_warning: float = 1e3
    blown_up_error: float = 1e6
    # ... and is far past any init's scale (rms(W) * sqrt(fan_in): He ~1.4, N(0, 10) on
    # 128 inputs 113): a head started at 1e-5 that grows to a normal scale is learning.
    blown_up_scale: float = 1e3
    shrink_ratio: float = 0.8  # ||W|| fell below 80% of its initial norm
    # rms(W) * sqrt(fan_in) = how much a layer scales unit-variance input. Xavier gives
    # ~1, He ~1.4, PyTorch's default ~0.58; below 0.35 the signal all but vanishes.
    concentrated_warning: float = 0.35
    concentrated_info: float = 0.7
    # ... and the scales multiply along a chain of layers: a finding only where the
    # chain leaves less than this of the signal (two default-init layers leave 0.33).
    concentrated_chain: float = 0.1
    saturated_fraction: float = 0.3  # of sigmoid/tanh outputs within 1e-2 of a bound
    dead_fraction: float = 0.4  # of ReLU units (channels after a conv) zero for a whole batch
    recent_records: int = 5  # "now" = median over this many latest sampled steps
    # Spread of the last hidden activation over the first's: the forward signal blows up
    # (too large an init); each layer multiplies it by about ratio**(1/layers).
    growing_warning: float = 1e2
    growing_error: float = 1e4

    def replace(self, **changes: float) -> Thresholds:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_THRESHOLDS = Thresholds()
