"""Diagnosis: pure functions from recorded history to findings.

No torch state: the inputs are StepRecords, EpochRecords and LayerInfos (live or
read back from a run folder), so a diagnosis can be recomputed from files. The
findings themselves live in diagnosis_gradients (across layers, through time, zero
and unused gradients, non-finite numbers) and diagnosis_layers (weights,
activations, the loss); gradient ratios come from gradflow, limits from thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence

from vgdiag.engine import diagnosis_gradients as grads
from vgdiag.engine import diagnosis_layers as per_layer
from vgdiag.engine.diagnosis_gradients import ALL_FIXES
from vgdiag.engine.gradflow import gradient_profile
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord, severity_rank
from vgdiag.engine.thresholds import DEFAULT_THRESHOLDS, Thresholds

__all__ = ["ALL_FIXES", "DEFAULT_THRESHOLDS", "Thresholds", "diagnose", "gradient_profile",
           "verdict", "worst_severity"]


def diagnose(
    records: Sequence[StepRecord],
    layers: Sequence[LayerInfo],
    epochs: Sequence[EpochRecord] = (),
    num_classes: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[Finding]:
    """All findings for a recorded run, most severe first."""
    t = thresholds
    findings: list[Finding] = []
    if records:
        findings += grads.non_finite(records, layers, epochs)
        findings += grads.zero_gradient(records, layers, t)
        findings += grads.gradient_ratio(records, layers, t)
        findings += grads.through_time(records, t)
        findings += grads.input_side_frozen(records, layers, t)
        findings += per_layer.weights_shrinking(records, layers, t)
        findings += per_layer.weights_concentrated(records, layers, t)
        findings += per_layer.saturated(records, layers, t)
        findings += per_layer.dead_units(records, layers, t)
    findings += grads.unused_layers(layers)
    findings += per_layer.stalled_loss(records, epochs, num_classes, t)
    findings.sort(key=lambda f: -severity_rank(f.severity))
    from vgdiag.plugin_api import recommend  # the installed plugins say what they fix

    return recommend(findings)


def verdict(findings: Sequence[Finding]) -> str:
    """'healthy', or 'unhealthy: ' and the ids of the warnings and errors."""
    bad = [f.id for f in findings if severity_rank(f.severity) >= 1]
    return "unhealthy: " + ", ".join(dict.fromkeys(bad)) if bad else "healthy"


def worst_severity(findings: Sequence[Finding]) -> str | None:
    if not findings:
        return None
    return max(findings, key=lambda f: severity_rank(f.severity)).severity
