"""Findings about single layers (weights, activations) and about the loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from vgdiag.engine import diagnosis_common as common
from vgdiag.engine.gradflow import output_layer
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.thresholds import Thresholds
from vgdiag.textfmt import plural


def stalled_loss(
    records: Sequence[StepRecord],
    epochs: Sequence[EpochRecord],
    num_classes: int,
    t: Thresholds,
) -> list[Finding]:
    if num_classes < 2:
        return []
    chance = math.log(num_classes)
    # A loss at chance after a handful of steps is a run that has not started yet.
    steps = epochs[-1].steps if epochs else (records[-1].step + 1 if records else 0)
    short = steps < t.stall_min_steps  # short epochs: 3 of them at chance still count
    if epochs:
        losses = [e.train_loss for e in epochs]
        loss_now = epochs[-1].train_loss
    else:
        latest = [r.loss for r in common.recent(records, t) if math.isfinite(r.loss)]
        if not latest or records[-1].step == 0:
            return []
        losses = latest
        loss_now = float(np.median(latest))
    # One-sided: a loss above ln(classes) (a jittery guesser) is no more learning than
    # one sitting exactly on it.
    floor = chance * (1 - t.stall_tolerance)
    if not math.isfinite(loss_now) or loss_now < floor:
        return []
    if loss_now > FAR_ABOVE * chance and len(losses) >= 2 and loss_now < 0.9 * losses[-2]:
        return []  # far above chance but falling: a large start coming down, not a stall
    stalled_epochs = 0
    for value in reversed(losses):
        if not value >= floor:
            break
        stalled_epochs += 1
    if short and not (epochs and stalled_epochs >= t.stall_min_epochs):
        # At chance, but too soon to tell a stall from a slow start: said, not judged.
        return [Finding(
            TOO_SHORT, "info", [],
            {"loss": loss_now, "ln_classes": chance, "steps": steps,
             "stall_min_steps": t.stall_min_steps, "stall_min_epochs": t.stall_min_epochs},
            f"The loss {loss_now:.4g} is "
            f"{'far above' if loss_now > FAR_ABOVE * chance else 'at'} chance "
            f"(ln({num_classes}) = {chance:.4f}) after "
            f"only {plural(steps, 'step')}: too few to tell a stall from a slow start "
            f"(that takes {t.stall_min_steps} steps or {t.stall_min_epochs} epochs at "
            "chance). Train longer, or with smaller batches, before reading the verdict.")]
    unit = "epoch" if epochs else "record"
    evidence: dict[str, Any] = {
        "loss": loss_now,
        "ln_classes": chance,
        "stalled_for": stalled_epochs,
        "unit": f"{unit}s",
        "steps": steps,
        "sampled_steps": len(records),
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
            (f"Training has stalled far above chance: the loss {loss_now:.4g} is "
             f"{loss_now / chance:.0f}x ln({num_classes}) = {chance:.4f}, the loss of guessing: "
             f"the outputs are large and confidently wrong (an init or learning rate too "
             f"large), for {plural(stalled_epochs, unit)}."
             if loss_now > FAR_ABOVE * chance else
             f"Training has stalled: the loss {loss_now:.4f} is no better than "
             f"ln({num_classes}) = {chance:.4f}, the loss of guessing (within "
             f"{t.stall_tolerance:.0%}), for {plural(stalled_epochs, unit)}."),
            ["adam", "weight-init", "relu", "batchnorm", "layerwise"],
        )
    ]


FAR_ABOVE = 3.0  # a loss this many times ln(classes) is worse than guessing, not stuck at it

UPDATES_TINY = "updates_tiny"
LARGE_UPDATE = 0.05  # ||dW|| / ||W|| per step: a twentieth of the weights each step
# A model whose last epoch is this far from chance toward a perfect score has learned:
# the gradient that vanishes toward its input is not what stops it.
LEARNED_SHARE = 0.8
LEARNED_LOSS = 0.1  # ... or, without a validation accuracy, a loss under 0.1 ln(classes)


def learned(epochs: Sequence[EpochRecord], num_classes: int) -> str | None:
    """How the last epoch shows the model learned ("val acc 0.99"), None if it did not."""
    if not epochs or num_classes < 2:
        return None
    last = epochs[-1]
    chance = 1.0 / num_classes
    if math.isfinite(last.val_acc):
        good = last.val_acc >= chance + LEARNED_SHARE * (1 - chance)
        return f"val acc {last.val_acc:.3g}" if good else None
    chance = math.log(num_classes)
    if math.isfinite(last.val_loss) and last.val_loss >= chance:
        return None  # a training set fitted, new data guessed: memorised, not learned
    if math.isfinite(last.train_loss) and last.train_loss <= LEARNED_LOSS * chance:
        return f"train loss {last.train_loss:.3g}"
    return None


def vanishing_but_learned(findings: list[Finding], epochs: Sequence[EpochRecord],
                          num_classes: int) -> list[Finding]:
    """A vanishing gradient in a model that learned anyway is worth knowing, not
    fixing: an info, so that a CI gate at warning does not fail a model that works."""
    how = learned(epochs, num_classes)
    if how is None:
        return findings
    slow = {"vanishing_gradient": "the input side may learn slowly",
            "vanishing_through_time": "the early time steps count for little",
            "weights_shrinking": "the weights shrink (weight decay does that)"}
    return [Finding(f.id, "info", f.layers, {**f.evidence, "learned": how},
                    f"{f.message} The model learned anyway ({how}): {slow[f.id]}, but this "
                    "is not what limits it.", f.recommend)
            if f.id in slow and f.severity != "info" else f
            for f in findings]


def median_updates(records: Sequence[StepRecord], layers: Sequence[LayerInfo]
                   ) -> dict[str, float]:
    """Each trainable weight layer's median ||dW|| / ||W|| over the whole run (a
    schedule's warm-up and decay are its ends, not its middle)."""
    names = [i.name for i in layers if i.trainable and i.used and i.fan_in]
    if not names or not records:
        return {}
    medians = common.median_over(records, "update_ratio", names)
    return {n: float(v) for n, v in zip(names, medians) if math.isfinite(v)}


TOO_SHORT = "too_short_to_judge"
def stall_not_in_the_gradients(stalled: Finding, records: Sequence[StepRecord],
                               layers: Sequence[LayerInfo], t: Thresholds) -> list[Finding]:
    """A stalled loss where no gradient finding fired: the gradient reaches every layer,
    so the gradient fixes are no advice. The stall says what to look at instead, and
    where every layer's updates are tiny a finding of its own names the learning rate."""
    updates = median_updates(records, layers)
    biggest = max(updates.values(), default=math.nan)
    tiny = bool(updates) and biggest < t.tiny_update
    if tiny:
        cause = (f"every layer's update is tiny (at most {biggest:.1e} of its norm per "
                 "step): see updates_tiny.")
    elif not updates:
        cause = ("the updates were not measured; check the learning rate, that the labels "
                 "belong to the inputs (shuffled or random labels cannot be learned), and "
                 "the loss function.")
    elif biggest > LARGE_UPDATE:
        cause = (f"the updates are large (up to {biggest:.1e} of a layer's norm per step, "
                 "median over the run): a learning rate this high can keep the loss at "
                 "chance; lower the learning rate, and check that the labels belong to the inputs.")
    else:
        cause = (f"the updates are of a usual size (up to {biggest:.1e} of a layer's norm "
                 "per step, median over the run): check that the labels belong to the "
                 "inputs (shuffled or random labels cannot be learned), the loss function, "
                 "and that the inputs carry the signal.")
    ratio = common.recent_ratio(records, layers, t)
    if not tiny and ratio < t.weakened_ratio:
        # Below a vanishing gradient's limit it is not, but weak enough that the
        # gradient fixes may still be what the model needs: they stay advised.
        return [Finding(
            stalled.id, stalled.severity, stalled.layers,
            {**stalled.evidence, "gradients_flow": False, "ratio_first_last": ratio},
            f"{stalled.message} The gradient reaches every layer but weakened: the first "
            f"layer gets {common.fmt(ratio)} of the output layer's (a vanishing gradient "
            f"is under {common.fmt(t.vanishing_warning)}), so a gradient fix may still "
            f"help; if none does, {cause}")]
    stall = Finding(
        stalled.id, stalled.severity, stalled.layers,
        {**stalled.evidence, "gradients_flow": True},
        f"{stalled.message} The gradient reaches every layer (no gradient finding), so "
        f"this is not a vanishing gradient; {cause}")
    if not tiny:
        return [stall]
    return [stall, Finding(
        UPDATES_TINY, "warning", list(updates),
        {"median_update_ratio": updates, "largest": biggest, "tiny_update": t.tiny_update},
        f"Updates are tiny: each step moves every layer by at most {biggest:.1e} of its "
        f"norm (median over the run; a net that learns moves ~1e-3). The learning rate "
        f"is too low for this model: raise it (try 10-100x).")]


def activations_growing(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    """The hidden activations' spread grows layer by layer toward the output.

    Read on the recent records whose activations are finite, else at initialisation
    (a run that diverged has only NaN after it): the forward signal that blew up
    explains the huge gradients and the NaN that followed.
    """
    names = [i.name for i in sorted(layers, key=lambda i: i.depth) if i.activation and i.used]
    if len(names) < 3:
        return []
    # A record past the divergence mixes blown-up and finite layers: not evidence.
    # (NaN alone is a layer that did not run at that step.)
    latest = common.recent(records, t)
    window = [r for r in latest if common.finite_step(r)]
    if len(window) < len(latest):
        window = []  # the run diverged: read the forward signal at initialisation
    stds = common.median_over(window or records[:1], "act_std", names)
    ok = np.flatnonzero(np.isfinite(stds) & (stds > 0))
    if len(ok) < 3:
        return []
    ratio = float(stds[ok[-1]] / stds[ok[0]])
    if ratio < t.growing_warning:
        return []
    per_layer = ratio ** (1.0 / (ok[-1] - ok[0]))
    grown = [names[i] for i in ok if stds[i] > stds[ok[0]] * per_layer]
    return [
        Finding(
            "activations_growing",
            "error" if ratio >= t.growing_error else "warning",
            grown,
            {"act_std": {names[i]: float(stds[i]) for i in ok}, "ratio_last_first": ratio,
             "growth_per_layer": per_layer, **common.rests_on(window or records[:1])},
            f"The activations grow toward the output: the last hidden layer's spread is "
            f"{common.fmt(ratio)}x the first's (about {per_layer:.1f}x per layer), so "
            "outputs and gradients blow up: the weights are too large for the depth.",
            [],
        )
    ]


def weights_shrinking(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    if records[-1].step == 0:
        return []
    # An embedding's rows no batch looks up only decay (weight decay, a position table
    # longer than the sequences): its norm says nothing of the gradient.
    embeddings = {i.name for i in layers if i.role == "embedding"}
    names = [n for n in common.trainable_names(layers) if n not in embeddings]
    w0 = common.values(records[0], "weight_norm", names)
    w1 = common.values(records[-1], "weight_norm", names)
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
            {"weight_norm_ratio": {n: float(r) for n, r in zip(names, ratio) if n in shrunk},
             **common.rests_on([records[0], records[-1]])},
            f"Weights drift toward 0: {len(shrunk)} layer(s) lost more than "
            f"{1 - t.shrink_ratio:.0%} of their initial norm.",
            ["weight-init", "adam", "batchnorm"],
        )
    ]


def weights_concentrated(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    # Embeddings and normalisation layers are looked up or rescale, a layer whose
    # output a normalisation layer rescales later does not set the signal's scale,
    # and a recurrent layer's scale acts through time (vanishing_through_time): only
    # chains of plain layers, up to (not including) the output layer, are judged.
    output = output_layer(records[-1], layers)
    scaled: dict[str, float] = {}
    for info in sorted(layers, key=lambda i: i.depth):
        s = records[-1].layers.get(info.name)
        if (s is None or info.fan_in <= 0 or info.num_params <= 0 or info.name == output
                or info.role in ("embedding", "norm", "recurrent") or info.normalized_after
                or not info.used):
            continue
        rms = s.weight_norm / math.sqrt(info.num_params)
        if math.isfinite(rms):  # NaN weights say nothing of their scale (non_finite does)
            scaled[info.name] = rms * math.sqrt(info.fan_in)
    if not scaled:
        return []
    median = float(np.median(list(scaled.values())))
    chain = float(np.prod(list(scaled.values())))
    if median >= t.concentrated_info or chain >= t.concentrated_chain:
        return []
    severity = "warning" if median < t.concentrated_warning else "info"
    low = [n for n, v in scaled.items() if v < t.concentrated_info]
    return [
        Finding(
            "weights_concentrated",
            severity,
            low,
            {"rms_times_sqrt_fan_in": scaled, "median": median, "chain": chain,
             **common.rests_on(records[-1:])},
            f"Weights are concentrated around 0: a typical hidden layer scales its input by "
            f"{median:.2f} (Xavier gives ~1, He ~1.4), and the {len(scaled)} layers of the "
            f"chain together by {common.fmt(chain)}, so little signal passes through.",
            ["weight-init"],
        )
    ]


class _UnitFraction(NamedTuple):
    """A finding about a fraction of units: those above a limit in some layers."""

    stat: str  # the LayerStats key, a fraction of units
    id: str  # the finding's id
    limit: str  # the Thresholds field, also the evidence key of the fractions
    message: str  # formatted with n (layers) and limit
    fixes: list[str]


UNIT_FRACTIONS = (
    _UnitFraction(
        "act_saturated", "saturated_activations", "saturated_fraction",
        "Saturated activations: in {n} layer(s) more than {limit:.0%} of sigmoid/tanh "
        "outputs sit at a bound, where their derivative is near 0.",
        ["relu", "batchnorm", "weight-init"],
    ),
    _UnitFraction(
        "act_dead", "dead_units", "dead_fraction",
        "Dead units: in {n} layer(s) more than {limit:.0%} of ReLU units (channels, after "
        "a convolution) output 0 for every sample of a batch, so they pass back no "
        "gradient.",
        ["weight-init", "batchnorm", "adam"],
    ),
)


def unit_fractions(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    """Saturated activations and dead units: a warning for each of UNIT_FRACTIONS whose
    recent median is above its limit in some layer."""
    names = [info.name for info in sorted(layers, key=lambda i: i.depth)]
    window = common.recent(records, t)
    findings = []
    for kind in UNIT_FRACTIONS:
        limit = getattr(t, kind.limit)
        frac = common.median_over(window, kind.stat, names)
        hits = {n: float(v) for n, v in zip(names, frac) if np.isfinite(v) and v > limit}
        if hits:
            findings.append(Finding(
                kind.id,
                "warning",
                list(hits),
                {kind.limit: hits, **common.rests_on(window)},
                kind.message.format(n=len(hits), limit=limit),
                list(kind.fixes),
            ))
    return findings
