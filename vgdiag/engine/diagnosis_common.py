"""What every finding reads records with: layer lists, recent medians, numbers in words."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from vgdiag.engine.gradflow import eligible
from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.engine.thresholds import Thresholds
from vgdiag.textfmt import fmt_num


def trainable_names(layers: Sequence[LayerInfo]) -> list[str]:
    return [info.name for info in sorted(layers, key=lambda i: i.depth) if info.trainable]


def reached_names(layers: Sequence[LayerInfo]) -> list[str]:
    """Trainable layers a gradient reaches, input side first."""
    return [info.name for info in sorted(layers, key=lambda i: i.depth) if eligible(info)]


def values(record: StepRecord, key: str, names: Sequence[str]) -> np.ndarray:
    return np.array(
        [getattr(record.layers[n], key) if n in record.layers else math.nan for n in names],
        dtype=np.float64,
    )


def recent(records: Sequence[StepRecord], t: Thresholds) -> Sequence[StepRecord]:
    return records[-t.recent_records :]


def median_over(records: Sequence[StepRecord], key: str, names: Sequence[str]) -> np.ndarray:
    stacked = np.stack([values(r, key, names) for r in records])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN: wanted
        return np.nanmedian(stacked, axis=0)


def finite_step(record: StepRecord) -> bool:
    """No infinite loss (NaN is also a loss never given, under vgdiag.watch), and no
    layer with infinite activations or a gradient that is not finite: a step from
    before a run diverged."""
    return not math.isinf(record.loss) and not any(
        s.grad_non_finite or math.isinf(s.act_mean) or math.isinf(s.act_std)
        for s in record.layers.values())


def recent_ratio(records: Sequence[StepRecord], layers: Sequence[LayerInfo],
                 t: Thresholds) -> float:
    """The first/last layer gradient ratio "now": the median over the recent sampled
    steps whose ratio is known (NaN where none is), as vanishing_gradient reads it."""
    from vgdiag.engine.gradflow import gradient_profile

    return median_ratio([gradient_profile(r, layers)["ratio"] for r in recent(records, t)])


def median_ratio(ratios: Sequence[float]) -> float:
    """The median of the known ratios (inf counts, NaN does not); NaN where none is."""
    values = np.array(ratios, dtype=np.float64)
    return float(np.nanmedian(values)) if np.isfinite(values).any() else math.nan


def rests_on(records: Sequence[StepRecord]) -> dict[str, Any]:
    """The evidence every finding carries: how many sampled steps, up to which step."""
    return {"sampled_steps": len(records), "step": records[-1].step if records else None}


def fmt(x: float) -> str:
    return fmt_num(x, 2)
