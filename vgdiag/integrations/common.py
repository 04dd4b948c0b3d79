"""What both trainer integrations need: the watch a callback drives, numbers out of
their metrics, plain hparams."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn

from vgdiag.engine.defaults import DEFAULT_HIST_EVERY
from vgdiag.engine.watch import Watch
from vgdiag.runs.folder import default_run_dir
from vgdiag.runs.watch_folder import ProbeSettings, watch


def scalar(value: Any) -> float | None:
    """A finite float from a number or a one-element tensor; None otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.detach().item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def first_metric(metrics: Mapping[str, Any], names: Iterable[str]) -> float | None:
    """The value of the first of `names` that `metrics` holds as a number."""
    for name in names:
        if name in metrics:
            value = scalar(metrics[name])
            if value is not None:
                return value
    return None


def plain_hparams(values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries config.json can hold as they are (numbers, strings, booleans)."""
    return {str(k): v for k, v in values.items()
            if isinstance(v, bool | int | float | str) or v is None}


class WatchSettings(TypedDict, total=False):
    """What either callback takes besides its folder and the run's classes."""

    name: str | None  # the run's name [default: the model's class name]
    # sample every N-th optimizer step (step 0 always) [default: vgdiag.watch's, every
    # 25th, or more often on a run too short for 50 samples]
    every: int
    hist_every: int  # histograms on every N-th sampled step (0 turns them off)


class CallbackWatch:
    """What both callbacks do: one `vgdiag.watch` writing a run folder, with each update
    marked from the framework's own events (its optimizer step is not hookable: a
    closure, an accelerate wrapper)."""

    def __init__(self, out: str | Path | None = None, *, name: str | None = None,
                 every: int | None = None, hist_every: int = DEFAULT_HIST_EVERY) -> None:
        self.out = Path(out) if out is not None else None
        self.name = name
        self.every = every
        self.hist_every = hist_every
        self.watch: Watch | None = None
        self._updating = False

    def start(self, model: nn.Module, optimizer: torch.optim.Optimizer | None, *,
              num_classes: int, hparams: Mapping[str, Any], total_epochs: int,
              steps_per_epoch: int, source: str, scaler: Any = None) -> Watch:
        """Start watching `model` (the optimizer is only described in config.json);
        `scaler` is the framework's loss scaler under float16 mixed precision."""
        name = self.name or type(model).__name__
        probe = ProbeSettings(hist_every=self.hist_every, num_classes=num_classes,
                              scaler=scaler)
        if self.every is not None:  # else vgdiag.watch's default for the run's length
            probe["every"] = self.every
        self.watch = watch(
            model, optimizer, out=self.out or default_run_dir(name), name=name,
            hparams=hparams, total_epochs=total_epochs, steps_per_epoch=steps_per_epoch,
            source=source, hook_optimizer=False, **probe,
        )
        return self.watch

    def before_update(self) -> None:
        """The gradients are complete; the parameters are about to change."""
        if self.watch is not None:
            self.watch.before_update()
            self._updating = True

    def after_update(self) -> None:
        """An update happened, if `before_update` said one was coming."""
        if self.watch is not None and self._updating:
            self._updating = False
            self.watch.after_update()

    def close(self, error: BaseException | None = None) -> None:
        if self.watch is not None:
            self.watch.close(error)


def batch_size_of(batch: Any) -> int | None:
    """The number of samples in a batch as a loop hands it over (a tensor, a tuple or
    list of them, a dict of them: the first tensor's first dimension); None if none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (tuple, list)):
        for item in batch:
            size = batch_size_of(item)
            if size is not None:
                return size
    return None
