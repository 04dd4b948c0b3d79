"""Diagnosis: pure functions from recorded history to findings.

No torch state: the inputs are StepRecords, EpochRecords and LayerInfos (live or
read back from a run folder), so a diagnosis can be recomputed from files.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord, severity_rank
from vgdiag.textfmt import fmt_num

ALL_FIXES = ["weight-init", "relu", "batchnorm", "adam", "skip", "layerwise", "gradnorm"]


@dataclass(frozen=True)
class Thresholds:
    """Named limits of the diagnosis; override any with Thresholds(field=value)."""

    # Each sigmoid layer divides the gradient by ~4 at best: three orders of magnitude
    # between the input and output layers leaves the input side effectively frozen.
    vanishing_error: float = 1e-3
    vanishing_warning: float = 1e-2  # two orders: the first layer learns 100x slower
    exploding_warning: float = 1e2  # gradient grows toward the input (std-10 init)
    exploding_error: float = 1e4
    stall_tolerance: float = 0.01  # loss above 99% of ln(classes) = no better than chance
    frozen_change_ratio: float = 1e-2  # input-side weights move <1% as much as output-side
    shrink_ratio: float = 0.8  # ||W|| fell below 80% of its initial norm
    # rms(W) * sqrt(fan_in) = how much a layer scales unit-variance input. Xavier gives
    # ~1, He ~1.4, PyTorch's default ~0.58; below 0.35 the signal all but vanishes.
    concentrated_warning: float = 0.35
    concentrated_info: float = 0.7
    saturated_fraction: float = 0.3  # of sigmoid/tanh outputs within 1e-2 of a bound
    dead_fraction: float = 0.4  # of ReLU units zero for a whole batch
    recent_records: int = 5  # "now" = median over this many latest sampled steps

    def replace(self, **changes: float) -> Thresholds:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


DEFAULT_THRESHOLDS = Thresholds()


def diagnose(
    records: Sequence[StepRecord],
    layers: Sequence[LayerInfo],
    epochs: Sequence[EpochRecord] = (),
    num_classes: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Finding]:
    """All findings for a recorded run, most severe first."""
    findings: list[Finding] = []
    if records:
        findings += _non_finite(records, layers, epochs)
        findings += _gradient_ratio(records, layers, thresholds)
        findings += _input_side_frozen(records, layers, thresholds)
        findings += _weights_shrinking(records, layers, thresholds)
        findings += _weights_concentrated(records, layers, thresholds)
        findings += _saturated(records, layers, thresholds)
        findings += _dead_units(records, layers, thresholds)
    findings += _stalled_loss(records, epochs, num_classes, thresholds)
    findings.sort(key=lambda f: -severity_rank(f.severity))
    return findings


def verdict(findings: Sequence[Finding]) -> str:
    """'healthy', or 'unhealthy: ' and the ids of the warnings and errors."""
    bad = [f.id for f in findings if severity_rank(f.severity) >= 1]
    return "unhealthy: " + ", ".join(dict.fromkeys(bad)) if bad else "healthy"


def worst_severity(findings: Sequence[Finding]) -> str | None:
    if not findings:
        return None
    return max(findings, key=lambda f: severity_rank(f.severity)).severity


# ----- helpers -----------------------------------------------------------------


def _trainable_names(layers: Sequence[LayerInfo]) -> list[str]:
    return [info.name for info in sorted(layers, key=lambda i: i.depth) if info.trainable]


def _values(record: StepRecord, key: str, names: Sequence[str]) -> np.ndarray:
    return np.array(
        [getattr(record.layers[n], key) if n in record.layers else math.nan for n in names],
        dtype=np.float64,
    )


def _recent(records: Sequence[StepRecord], t: Thresholds) -> Sequence[StepRecord]:
    return records[-t.recent_records :]


def _median_over(records: Sequence[StepRecord], key: str, names: Sequence[str]) -> np.ndarray:
    stacked = np.stack([_values(r, key, names) for r in records])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN: wanted
        return np.nanmedian(stacked, axis=0)


def gradient_profile(record: StepRecord, layers: Sequence[LayerInfo]) -> dict[str, Any]:
    """First/last grad_norm ratio and slope of log10 grad_norm per layer of depth."""
    names = _trainable_names(layers)
    g = _values(record, "grad_norm", names)
    ok = np.isfinite(g) & (g > 0)
    if ok.sum() < 2:
        return {"ratio": math.nan, "slope": math.nan, "names": names, "grad_norm": g}
    idx = np.flatnonzero(ok)
    ratio = float(g[idx[0]] / g[idx[-1]])
    slope = float(np.polyfit(idx.astype(float), np.log10(g[idx]), 1)[0])
    return {"ratio": ratio, "slope": slope, "names": names, "grad_norm": g}


# ----- findings ------------------------------------------------------------------


def _gradient_ratio(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    init = gradient_profile(records[0], layers)
    recent = [gradient_profile(r, layers) for r in _recent(records, t)]
    ratios = np.array([p["ratio"] for p in recent])
    if not np.isfinite(ratios).any():
        return []
    ratio = float(np.nanmedian(ratios))
    slope = float(np.nanmedian([p["slope"] for p in recent]))
    names = init["names"]
    g_now = _median_over(_recent(records, t), "grad_norm", names)
    evidence = {
        "ratio_first_last": ratio,
        "ratio_first_last_init": init["ratio"],
        "log10_slope_per_layer": slope,
        "grad_norm": {n: float(v) for n, v in zip(names, g_now)},
        "step": records[-1].step,
    }
    if ratio < t.vanishing_warning:
        severity = "error" if ratio < t.vanishing_error else "warning"
        last = g_now[np.isfinite(g_now)][-1]
        starving = [n for n, v in zip(names, g_now) if v < last * t.vanishing_warning]
        return [
            Finding(
                "vanishing_gradient",
                severity,
                starving,
                evidence,
                f"The gradient vanishes toward the input: the first layer gets {fmt_num(ratio, 2)} "
                f"of the output layer's gradient norm, shrinking about "
                f"{10 ** max(slope, 0):.1f}x per layer; {len(starving)} layer(s) barely learn.",
                ALL_FIXES,
            )
        ]
    if ratio > t.exploding_warning:
        severity = "error" if ratio > t.exploding_error else "warning"
        first = g_now[np.isfinite(g_now)][0]
        growing = [n for n, v in zip(names, g_now) if v > first / t.exploding_warning]
        return [
            Finding(
                "exploding_gradient",
                severity,
                growing,
                evidence,
                f"The gradient grows toward the input: the first layer gets {fmt_num(ratio, 2)}x "
                f"the output layer's gradient norm, growing about "
                f"{10 ** max(-slope, 0):.1f}x per layer.",
                ["weight-init", "batchnorm", "gradnorm"],
            )
        ]
    return []


def _non_finite(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], epochs: Sequence[EpochRecord]
) -> list[Finding]:
    # A trainable layer's grad_norm is never NaN unless its gradient is (absent
    # gradients count as 0), so NaN here means the numbers blew up.
    trainable = set(_trainable_names(layers))
    bad_layers: list[str] = []
    first_step: int | None = None
    for r in records:
        bad = [n for n, s in r.layers.items() if n in trainable and not math.isfinite(s.grad_norm)]
        if bad or math.isinf(r.loss):
            first_step = r.step if first_step is None else first_step
        bad_layers += [n for n in bad if n not in bad_layers]
    loss_bad = [e.epoch for e in epochs if not math.isfinite(e.train_loss)]
    if first_step is None and not loss_bad:
        return []
    return [
        Finding(
            "non_finite",
            "error",
            bad_layers,
            {"first_step": first_step, "epochs_with_non_finite_loss": loss_bad},
            "The loss or gradients became NaN or infinite: training diverged.",
            ["gradnorm", "batchnorm", "weight-init"],
        )
    ]


def _stalled_loss(
    records: Sequence[StepRecord],
    epochs: Sequence[EpochRecord],
    num_classes: int,
    t: Thresholds,
) -> list[Finding]:
    if num_classes < 2:
        return []
    chance = math.log(num_classes)
    if epochs:
        losses = [e.train_loss for e in epochs]
        latest = epochs[-1]
        loss_now = latest.train_loss
    else:
        recent = [r.loss for r in _recent(records, t) if math.isfinite(r.loss)]
        if not recent or records[-1].step == 0:
            return []
        losses = recent
        loss_now = float(np.median(recent))
    # One-sided: a loss above ln(classes) (a jittery guesser) is no more learning than
    # one sitting exactly on it.
    floor = chance * (1 - t.stall_tolerance)
    if not math.isfinite(loss_now) or loss_now < floor:
        return []
    stalled_epochs = 0
    for value in reversed(losses):
        if not value >= floor:
            break
        stalled_epochs += 1
    evidence: dict[str, Any] = {
        "loss": loss_now,
        "ln_classes": chance,
        "stalled_for": stalled_epochs,
        "unit": "epochs" if epochs else "records",
    }
    if epochs:
        evidence["val_acc"] = epochs[-1].val_acc
        evidence["chance_acc"] = 1.0 / num_classes
    severity = "error" if (not epochs or len(epochs) >= 2) else "warning"
    return [
        Finding(
            "loss_stalled",
            severity,
            [],
            evidence,
            f"Training has stalled: the loss {loss_now:.4f} is no better than "
            f"ln({num_classes}) = {chance:.4f}, the loss of guessing (within "
            f"{t.stall_tolerance:.0%}), for {stalled_epochs} {evidence['unit']}.",
            ["adam", "weight-init", "relu", "batchnorm", "layerwise"],
        )
    ]


def _input_side_frozen(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    if records[-1].step == 0:
        return []
    names = _trainable_names(layers)
    change = _values(records[-1], "weight_change", names)
    ok = np.flatnonzero(np.isfinite(change))
    if len(ok) < 2 or change[ok[-1]] <= 0:
        return []
    first, last = change[ok[0]], change[ok[-1]]
    ratio = float(first / last)
    if ratio >= t.frozen_change_ratio:
        return []
    frozen = [names[i] for i in ok if change[i] < last * t.frozen_change_ratio]
    return [
        Finding(
            "input_side_frozen",
            "warning",
            frozen,
            {
                "weight_change": {names[i]: float(change[i]) for i in ok},
                "ratio_first_last": ratio,
                "step": records[-1].step,
            },
            f"Input-side weights barely change: the first layer moved {fmt_num(float(first), 2)} "
            f"of its initial norm against {fmt_num(float(last), 2)} for the output layer.",
            ["adam", "skip", "layerwise", "gradnorm", "batchnorm"],
        )
    ]


def _weights_shrinking(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    if records[-1].step == 0:
        return []
    names = _trainable_names(layers)
    w0 = _values(records[0], "weight_norm", names)
    w1 = _values(records[-1], "weight_norm", names)
    with np.errstate(all="ignore"):
        ratio = w1 / w0
    shrunk = [n for n, r in zip(names, ratio) if math.isfinite(r) and r < t.shrink_ratio]
    if not shrunk:
        return []
    return [
        Finding(
            "weights_shrinking",
            "warning",
            shrunk,
            {"weight_norm_ratio": {n: float(r) for n, r in zip(names, ratio) if n in shrunk}},
            f"Weights drift toward 0: {len(shrunk)} layer(s) lost more than "
            f"{1 - t.shrink_ratio:.0%} of their initial norm.",
            ["weight-init", "adam", "batchnorm"],
        )
    ]


def _weights_concentrated(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    scaled: dict[str, float] = {}
    for info in sorted(layers, key=lambda i: i.depth)[:-1]:  # hidden layers only
        s = records[-1].layers.get(info.name)
        if s is None or info.fan_in <= 0 or info.num_params <= 0:
            continue
        rms = s.weight_norm / math.sqrt(info.num_params)
        scaled[info.name] = rms * math.sqrt(info.fan_in)
    if not scaled:
        return []
    median = float(np.median(list(scaled.values())))
    if median >= t.concentrated_info:
        return []
    severity = "warning" if median < t.concentrated_warning else "info"
    low = [n for n, v in scaled.items() if v < t.concentrated_info]
    return [
        Finding(
            "weights_concentrated",
            severity,
            low,
            {"rms_times_sqrt_fan_in": scaled, "median": median},
            f"Weights are concentrated around 0: a typical hidden layer scales its input by "
            f"{median:.2f} (Xavier gives ~1, He ~1.4), so little signal passes through.",
            ["weight-init"],
        )
    ]


def _activation_fraction(
    records: Sequence[StepRecord],
    layers: Sequence[LayerInfo],
    t: Thresholds,
    key: str,
    limit: float,
) -> dict[str, float]:
    """Layers whose recent median `key` (a fraction of units) is above `limit`."""
    names = [info.name for info in sorted(layers, key=lambda i: i.depth)]
    frac = _median_over(_recent(records, t), key, names)
    return {n: float(v) for n, v in zip(names, frac) if np.isfinite(v) and v > limit}


def _saturated(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    hits = _activation_fraction(records, layers, t, "act_saturated", t.saturated_fraction)
    if not hits:
        return []
    return [
        Finding(
            "saturated_activations",
            "warning",
            list(hits),
            {"saturated_fraction": hits},
            f"Saturated activations: in {len(hits)} layer(s) more than "
            f"{t.saturated_fraction:.0%} of sigmoid/tanh outputs sit at a bound, where "
            "their derivative is near 0.",
            ["relu", "batchnorm", "weight-init"],
        )
    ]


def _dead_units(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    hits = _activation_fraction(records, layers, t, "act_dead", t.dead_fraction)
    if not hits:
        return []
    return [
        Finding(
            "dead_units",
            "warning",
            list(hits),
            {"dead_fraction": hits},
            f"Dead units: in {len(hits)} layer(s) more than {t.dead_fraction:.0%} of ReLU "
            "units output 0 for every sample of a batch, so they pass back no gradient.",
            ["weight-init", "batchnorm", "adam"],
        )
    ]
