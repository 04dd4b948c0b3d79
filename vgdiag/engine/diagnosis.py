"""Diagnosis: pure functions from recorded history to findings.

No torch state: the inputs are StepRecords, EpochRecords and LayerInfos (live or
read back from a run folder), so a diagnosis can be recomputed from files. The
findings themselves live in diagnosis_gradients (across layers, through time, zero
and unused gradients, non-finite numbers) and diagnosis_layers (weights,
activations, the loss); gradient ratios come from gradflow, limits from thresholds.
`LiveDiagnosis` is what a run in progress shows after each epoch, kept cheap.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection, Sequence

from vgdiag.engine import diagnosis_fit as fit
from vgdiag.engine import diagnosis_gradients as grads
from vgdiag.engine import diagnosis_layers as per_layer
from vgdiag.engine.diagnosis_gradients import ALL_FIXES
from vgdiag.engine.gradflow import gradient_profile
from vgdiag.engine.history import History
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord, severity_rank
from vgdiag.engine.thresholds import DEFAULT_THRESHOLDS, Thresholds

__all__ = ["ALL_FIXES", "DEFAULT_THRESHOLDS", "LiveDiagnosis", "Thresholds", "diagnose",
           "gradient_profile", "verdict", "worst_severity"]

LIVE_RECORDS = 16  # recent records the per-epoch diagnosis reads (it uses at most 5)
# Short epochs reuse the last live diagnosis for this long: the findings of a run do
# not change faster than a person can read them. The final diagnosis is always fresh.
DIAGNOSIS_INTERVAL_S = 2.0


def diagnose(
    records: Sequence[StepRecord],
    layers: Sequence[LayerInfo],
    epochs: Sequence[EpochRecord] = (),
    num_classes: int = 0,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    exclude: Collection[str] = (),
) -> list[Finding]:
    """All findings for a recorded run, most severe first; `exclude` names plugins not
    to advise (those that cannot apply to the model: plugin_api.not_applicable)."""
    t = thresholds
    findings: list[Finding] = []
    if records:
        findings += grads.non_finite(records, layers, epochs)
        findings += grads.weights_blown_up(records, layers, t)  # before what it causes
        findings += grads.zero_gradient(records, layers, t)
        findings += grads.gradient_ratio(records, layers, t)
        findings += grads.through_time(records, t)
        findings += grads.input_side_frozen(records, layers, t)
        findings += per_layer.weights_shrinking(records, layers, t)
        findings += per_layer.weights_concentrated(records, layers, t)
        findings += per_layer.activations_growing(records, layers, t)
        findings += per_layer.unit_fractions(records, layers, t)
    else:
        findings.append(not_measured(epochs))
    findings = _without_repeats(findings)
    findings = per_layer.vanishing_but_learned(findings, epochs, num_classes)
    stalled = per_layer.stalled_loss(records, epochs, num_classes, t)
    gradients_flow = bool(records) and not any(f.severity != "info" for f in findings)
    if stalled and stalled[0].id == "loss_stalled" and gradients_flow:
        stalled = per_layer.stall_not_in_the_gradients(stalled[0], records, layers, t)
    findings += grads.unused_layers(layers)
    findings += stalled
    findings += fit.memorising(epochs, num_classes, t)
    findings.sort(key=lambda f: -severity_rank(f.severity))
    from vgdiag.plugin_api import recommend  # the installed plugins say what they fix

    findings = recommend(findings, records=records, layers=layers, exclude=exclude)
    findings = _activations_by_hand(findings, records, layers)
    # A stall the gradients do not explain is not what the gradient fixes address
    # (updates_tiny, beside it, carries the learning-rate advice).
    return [dataclasses.replace(f, recommend=[]) if f.evidence.get("gradients_flow") else f
            for f in findings]


# Findings a non-saturating activation is a fix for.
_SATURATION_FINDINGS = ("vanishing_gradient", "saturated_activations")


def _activations_by_hand(findings: list[Finding], records: Sequence[StepRecord],
                         layers: Sequence[LayerInfo]) -> list[Finding]:
    """Where every saturating activation is a function call in forward (`torch.sigmoid`,
    named `sigmoid()`), no plugin can swap it, so the advice most often needed would go
    unsaid: the finding says it in words."""
    recent = records[-5:]
    saturating = {i.activation for i in layers if any(
        i.name in r.layers and math.isfinite(r.layers[i.name].act_saturated) for r in recent)}
    if not saturating or not all(str(a).endswith("()") for a in saturating):
        return findings
    named = ", ".join(sorted(str(a) for a in saturating))
    advice = (f" Its saturating activations ({named}) are called as functions in forward, "
              "which no plugin can swap: replacing them there by ReLU (torch.relu, with He "
              "initialisation) is the usual fix.")
    return [dataclasses.replace(f, message=f.message + advice)
            if f.id in _SATURATION_FINDINGS else f for f in findings]


def _without_repeats(findings: list[Finding]) -> list[Finding]:
    """A gradient of exactly 0 also reads as a vanishing ratio of 0: where every layer
    vanishing_gradient names is one zero_gradient names (with its cause), it says
    nothing more."""
    zero = {n for f in findings if f.id == "zero_gradient" for n in f.layers}
    return [f for f in findings if not (
        f.id == "vanishing_gradient" and zero and set(f.layers) <= zero)]


NOT_MEASURED = "not_measured"


def not_measured(epochs: Sequence[EpochRecord]) -> Finding:
    """No sampled step at all: nothing can be said about the gradients, and a CI gate
    must not read that as healthy (an error, so every --fail-on level fails it)."""
    steps = epochs[-1].steps if epochs else 0
    return Finding(
        NOT_MEASURED, "error", [], {"sampled_steps": 0, "epochs": len(epochs), "steps": steps},
        "No training step was measured: the run ended before its first sampled step, or "
        "(under vgdiag.watch) the probe never saw an optimizer step: give it the "
        "optimizer whose step() the loop calls, or call w.step() after each backward")


def verdict(findings: Sequence[Finding]) -> str:
    """'healthy', 'not measured' (no sampled step), or 'unhealthy: ' and the ids of the
    warnings and errors."""
    if any(f.id == NOT_MEASURED for f in findings):
        return "not measured"
    bad = [f.id for f in findings if severity_rank(f.severity) >= 1]
    return "unhealthy: " + ", ".join(dict.fromkeys(bad)) if bad else "healthy"


def worst_severity(findings: Sequence[Finding]) -> str | None:
    if not findings:
        return None
    return max(findings, key=lambda f: severity_rank(f.severity)).severity


class LiveDiagnosis:
    """The findings of a run in progress, as the trainer and a Watch send them per epoch.

    The first record and the recent ones are all these findings need (all but the
    step at which values turned non-finite), so an epoch's cost does not grow with the
    run; within DIAGNOSIS_INTERVAL_S of the last one the same findings are returned.
    """

    def __init__(self) -> None:
        self._findings: list[Finding] | None = None
        self._at = 0.0

    def findings(self, history: History, layers: Sequence[LayerInfo],
                 epochs: Sequence[EpochRecord], num_classes: int,
                 exclude: Collection[str] = ()) -> list[Finding]:
        now = time.perf_counter()
        if self._findings is None or now - self._at >= DIAGNOSIS_INTERVAL_S:
            records = history.records()
            if len(records) > LIVE_RECORDS + 1:
                records = [records[0], *records[-LIVE_RECORDS:]]
            self._findings = diagnose(records, layers, epochs, num_classes, exclude=exclude)
            self._at = now
        return self._findings
