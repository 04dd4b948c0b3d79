"""Gradient relative to the output layer: the one place it is computed.

The output layer is the layer nearest the loss, among the trainable layers a gradient
reaches, whose gradient is finite and not zero. Every other layer's gradient is read
as a ratio to it: the first/last ratio and the decay slope are what vanishing and
exploding verdicts rest on, and the health level of a ratio is what every front end
colours. Layers no gradient reaches (an unused head, a frozen layer) have no ratio:
they are reported as such, never blamed. A gradient of exactly zero counts: it is
the most vanished gradient there is. The input side of the first/last ratio is the
first layer with a weight (`has_weight`): a norm's gain vector, first in line where a
tied embedding became the output layer, has a gradient of another scale.

Blocks are the repeated structure of module names (`layer1.0`, `blocks.3`,
`encoder.layers.5`): the gradient of a block is the norm over its layers' gradients.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.engine.thresholds import DEFAULT_THRESHOLDS, Thresholds

HEALTH_LEVELS = ("ok", "weak", "bad", "none")  # the CSS classes are "health--<level>"
MIN_BLOCKS = 3  # fewer repeated blocks than this: the per-layer view says it all
_INDEX = re.compile(r"^\d+$")


def positive(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def eligible(info: LayerInfo) -> bool:
    """Whether a layer's gradient is read against the output layer's."""
    return info.trainable and info.used


def output_index(grads: Sequence[float], ok: Sequence[bool],
                 matrix: Sequence[bool] | None = None) -> int | None:
    """Index of the output layer: the last eligible one with a positive gradient.

    Where `matrix` says which layers can be it (`can_be_output`) and any candidate can, only
    those: a learned temperature or scale applied after the head is not the output
    layer, and every ratio against its one number's gradient would mislead.
    """
    candidates = [e and positive(g) for g, e in zip(grads, ok)]
    if matrix is not None:
        with_matrix = [c and m for c, m in zip(candidates, matrix)]
        if any(with_matrix):
            candidates = with_matrix
    found = None
    for i, c in enumerate(candidates):
        if c:
            found = i
    return found


def can_be_output(info: LayerInfo) -> bool:
    """Whether a layer can be the output layer: it applies a weight matrix (its fan-in
    is known) or is an embedding or recurrent layer. A module's loose parameters (a
    learned scale, a temperature, a lone bias) are not, nor is a norm after the last
    weight layer (logits through a BatchNorm1d, an encoder's final LayerNorm): its
    gain vector's gradient is of another scale than a weight matrix's. A model with
    no such layer reads against its last one (output_index)."""
    return has_weight(info)


def output_units(info: LayerInfo) -> int | None:
    """How many outputs a weight layer has, from its size: out x (fan-in, + 1 with a
    bias); None for a layer without a weight matrix or a recurrent one."""
    if info.fan_in <= 0 or info.role == "recurrent":
        return None
    per_unit = info.fan_in + (1 if "bias" in info.param_names else 0)
    units, rest = divmod(info.num_params, per_unit)
    return units if units and not rest else None


def ratios_to_output(grads: Sequence[float], ok: Sequence[bool],
                     matrix: Sequence[bool] | None = None) -> list[float]:
    """Each gradient over the output layer's (NaN where not eligible or unknown)."""
    out = output_index(grads, ok, matrix)
    if out is None:
        return [math.nan] * len(grads)
    ref = grads[out]
    return [g / ref if e and math.isfinite(g) else math.nan for g, e in zip(grads, ok)]


def first_last_ratio(grads: Sequence[float], matrix: Sequence[bool] | None = None,
                     firsts: Sequence[bool] | None = None) -> float:
    """Input-side over output-layer gradient, input side first (zero counts as 0).

    The input side is the first layer `firsts` allows, where it allows one: a norm's
    gain vector (a tied model's first layer once its embedding is the output layer)
    has a gradient of another scale than the weight matrices'.
    """
    out = output_index(grads, [True] * len(grads), matrix)
    if out is None:
        return math.nan
    finite = [i for i, g in enumerate(grads[:out]) if math.isfinite(g)]
    allowed = [i for i in finite if firsts is None or firsts[i]]
    if not finite:
        return math.nan
    first = (allowed or finite)[0]
    return float(grads[first] / grads[out])


def has_weight(info: LayerInfo) -> bool:
    """A layer whose gradient compares with a weight matrix's: not a norm's gain vector
    nor a module's loose parameters."""
    return info.fan_in > 0 or info.role in ("embedding", "recurrent")


def health(ratio: float, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> str:
    """'bad', 'weak', 'ok' or 'none' for a layer's gradient relative to the output layer.

    The same limits as the diagnosis: below 1e-3 of the output layer's gradient a
    layer is effectively frozen (bad), below 1e-2 it learns 100x slower (weak); the
    mirror limits flag a gradient that grows toward the input.
    """
    if not math.isfinite(ratio):
        return "none" if math.isnan(ratio) else "bad"
    if ratio < thresholds.vanishing_error or ratio > thresholds.exploding_error:
        return "bad"
    if ratio < thresholds.vanishing_warning or ratio > thresholds.exploding_warning:
        return "weak"
    return "ok"


def _ordered(layers: Sequence[LayerInfo], record: StepRecord) -> list[LayerInfo]:
    if not layers:  # a record read back without layer information: its own order
        return [LayerInfo(n, "", i, 0, ()) for i, n in enumerate(record.layers)]
    ordered = sorted(layers, key=lambda i: i.depth)
    # A staged run's layers are its last stage's: an earlier stage's record also holds
    # that stage's own output head (layer-wise training), its output layer then.
    known = {i.name for i in ordered}
    top = ordered[-1].depth + 1 if ordered else 0
    extra = [LayerInfo(n, "", top + k, 0, (), fan_in=1)
             for k, n in enumerate(n for n in record.layers if n not in known)]
    return ordered + extra


def _grad(record: StepRecord, name: str) -> float:
    s = record.layers.get(name)
    return float(s.grad_norm) if s is not None else math.nan


def output_layer(record: StepRecord, layers: Sequence[LayerInfo]) -> str | None:
    ordered = _ordered(layers, record)
    out = output_index([_grad(record, i.name) for i in ordered], [eligible(i) for i in ordered],
                       [can_be_output(i) for i in ordered])
    return None if out is None else ordered[out].name


def output_grad_norm(record: StepRecord, layers: Sequence[LayerInfo]) -> float:
    name = output_layer(record, layers)
    return math.nan if name is None else _grad(record, name)


def grad_ratios(record: StepRecord, layers: Sequence[LayerInfo]) -> dict[str, float]:
    """Each layer's grad_norm divided by the output layer's (NaN where unknown)."""
    ordered = _ordered(layers, record)
    ratios = ratios_to_output([_grad(record, i.name) for i in ordered],
                              [eligible(i) for i in ordered], [can_be_output(i) for i in ordered])
    by_name = dict(zip((i.name for i in ordered), ratios))
    return {name: by_name.get(name, math.nan) for name in record.layers}


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of log10 of the positive values against their position."""
    g = np.asarray(values, dtype=np.float64)
    idx = np.flatnonzero(np.isfinite(g) & (g > 0))
    if len(idx) < 2:
        return math.nan
    return float(np.polyfit(idx.astype(float), np.log10(g[idx]), 1)[0])


def gradient_profile(record: StepRecord, layers: Sequence[LayerInfo]) -> dict[str, Any]:
    """First/last grad_norm ratio and slope of log10 grad_norm per layer of depth.

    Over the trainable layers a gradient reaches, from the input side to the output
    layer; "zero" names those whose gradient is exactly 0.
    """
    infos = [i for i in _ordered(layers, record) if eligible(i)]
    names = [i.name for i in infos]
    matrix = [can_be_output(i) for i in infos]
    g = np.array([_grad(record, n) for n in names], dtype=np.float64)
    out = output_index(g.tolist(), [True] * len(g), matrix)
    upto = g[: out + 1] if out is not None else g[:0]
    return {
        "ratio": first_last_ratio(g.tolist(), matrix, [has_weight(i) for i in infos]),
        "slope": slope(upto.tolist()),
        "names": names,
        "grad_norm": g,
        "output": names[out] if out is not None else None,
        "zero": [n for n, v in zip(names, g) if v == 0.0],
    }


# ----- blocks ------------------------------------------------------------------------


def block_of(name: str) -> str:
    """The repeated unit a layer belongs to: its name up to the first index part."""
    parts = name.split(".")
    for k, part in enumerate(parts):
        if _INDEX.match(part) and k > 0:
            return ".".join(parts[: k + 1])
    return name


def blocks(layers: Sequence[LayerInfo]) -> list[tuple[str, list[str]]]:
    """(block, its layers) from input to loss, or [] where nothing repeats enough."""
    groups: dict[str, list[str]] = {}
    for info in sorted(layers, key=lambda i: i.depth):
        groups.setdefault(block_of(info.name), []).append(info.name)
    repeated = [b for b in groups if b != groups[b][0] or len(groups[b]) > 1]
    if len(repeated) < MIN_BLOCKS or not any(len(groups[b]) > 1 for b in repeated):
        return []
    return list(groups.items())


def block_profile(record: StepRecord, layers: Sequence[LayerInfo]) -> list[dict[str, Any]]:
    """Per block: its layers, the norm of their gradients, the ratio to the output block."""
    info = {i.name: i for i in layers}
    rows: list[dict[str, Any]] = []
    for name, members in blocks(layers):
        reached = [m for m in members if eligible(info[m])]
        g = [_grad(record, m) for m in reached]
        rows.append({
            "name": name,
            "layers": members,
            "grad_norm": math.sqrt(sum(v * v for v in g)) if g else math.nan,
        })
    ratios = ratios_to_output([r["grad_norm"] for r in rows], [True] * len(rows))
    for row, ratio in zip(rows, ratios):
        row["ratio_to_output"] = ratio
    return rows


def block_summary(
    first: StepRecord | None, last: StepRecord | None, layers: Sequence[LayerInfo]
) -> dict[str, Any]:
    """summary.json's `blocks`: the block profile at the first and last sampled step."""
    if not blocks(layers) or last is None:
        return {}
    now = block_profile(last, layers)
    init = block_profile(first, layers) if first is not None else []
    for row, row0 in zip(now, init):
        row["grad_norm_first"] = row0["grad_norm"]
    grads = [r["grad_norm"] for r in now]
    return {
        "rows": now,
        "ratio_first_last": first_last_ratio(grads),
        "log10_slope_per_block": slope(grads[: (output_index(grads, [True] * len(grads)) or 0)
                                             + 1]),
    }
