"""What a run folder's config.json says: where a run ran, and what a watched loop is."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from vgdiag._version import __version__
from vgdiag.engine.probe_layers import unwrap


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and CPU threads, for config.json."""
    return {
        "vgdiag_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
    }


def run_config(
    model: nn.Module,
    optimizer: Optimizer | None,
    *,
    name: str,
    every: int,
    hist_every: int,
    num_classes: int,
    world_size: int,
    source: str,
    hparams: Mapping[str, Any] | None = None,
    total_epochs: int = 0,
    steps_per_epoch: int = 0,
) -> dict[str, Any]:
    """config.json for a watched loop: what can be known from the model and optimizer,
    plus what the caller knows (`hparams`: lr, batch_size, epochs, seed...)."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    inner = unwrap(model)
    train: dict[str, Any] = {"every": every, "hist_every": hist_every}
    if optimizer is not None and optimizer.param_groups:
        lrs = [g.get("lr") for g in optimizer.param_groups]
        if isinstance(lrs[0], int | float):
            train["lr"] = float(lrs[0])
        if len(set(map(str, lrs))) > 1:  # parameter groups with learning rates of their own
            train["lr_groups"] = [float(v) if isinstance(v, int | float) else str(v)
                                  for v in lrs]
    if total_epochs:
        train["epochs"] = total_epochs
    train.update(hparams or {})
    return {
        **environment(device),
        "source": source,  # watch | lightning | transformers
        "world_size": world_size,
        "experiment": {
            "name": name,
            "model": type(inner).__name__,
            "optimizer": type(optimizer).__name__ if optimizer is not None else None,
            "plugins": [],
            "staged": False,
            "train": train,
            "notes": {},
        },
        "data": {"num_classes": num_classes} if num_classes else {},
        "stages": [{"name": "train", "epochs": total_epochs}] if total_epochs else [],
        "steps_per_epoch": steps_per_epoch,
    }
