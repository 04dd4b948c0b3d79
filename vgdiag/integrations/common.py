"""What both trainer integrations need: numbers out of their metrics, plain hparams."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch


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
