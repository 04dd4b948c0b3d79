"""Loss scaling (torch.amp.GradScaler): the factor a sampled step's gradients carry.

Under float16 mixed precision the loss is multiplied by the scaler's scale before
backward, so every gradient the backward pass makes is scaled: the layers' output
gradients (read in backward) always, the parameters' `.grad` until the scaler unscales
them (`scaler.step()` does before calling `optimizer.step()`; a loop or framework may
call `unscale_` earlier, to clip). The probe divides by the scale where it was
measured scaled, so the numbers are those of the loss the user wrote.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

import torch
from torch.amp.grad_scaler import GradScaler, OptState

# GradScaler.step() calls optimizer.step() from _maybe_opt_step(): the probe's step
# hook runs a few frames below it (torch's optimizer wrappers in between).
_SCALER_FRAMES = 12


def calling_scaler() -> GradScaler | None:
    """The GradScaler whose step() is running optimizer.step() now, if one is."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_SCALER_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        # Only a frame of the scaler's own methods is looked into: f_locals is costly.
        if code.co_name in ("_maybe_opt_step", "step") and "grad_scaler" in code.co_filename:
            owner = frame.f_locals.get("self")
            if isinstance(owner, GradScaler):
                return owner
        frame = frame.f_back
    return None


def loss_scale(scaler: GradScaler | None,
               optimizer: Any) -> tuple[torch.Tensor | None, bool]:
    """(the scale backward ran under, on the device; whether `.grad` still holds it).

    (None, False) without a scaler or with a disabled one. The scale is copied: the
    scaler's update() changes its tensor in place, maybe before the sample is read.
    """
    if scaler is None or not scaler.is_enabled():
        return None, False
    try:
        scale = scaler._get_scale_async()
    except Exception:  # a scaler that has not scaled anything yet, or another version
        return None, False
    if not isinstance(scale, torch.Tensor):
        return None, False
    states = getattr(scaler, "_per_optimizer_states", {})
    if optimizer is not None:  # no state yet: neither unscaled nor stepped this step
        stages = [states[id(optimizer)].get("stage")] if id(optimizer) in states else []
    else:  # the optimizer is not known: any one the scaler unscaled
        stages = [s.get("stage") for s in states.values()]
    unscaled = OptState.UNSCALED in stages or OptState.STEPPED in stages
    return scale.detach().clone().reshape(()), not unscaled
