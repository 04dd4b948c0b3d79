"""Findings about where the gradient goes: across layers, through time, to nowhere."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vgdiag.engine import diagnosis_common as common
from vgdiag.engine.gradflow import (
    can_be_output,
    first_last_ratio,
    gradient_profile,
    has_weight,
    slope,
)
from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, StepRecord
from vgdiag.engine.thresholds import Thresholds

ALL_FIXES = ["weight-init", "relu", "batchnorm", "adam", "skip", "layerwise", "gradnorm"]


def gradient_ratio(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    window = common.recent(records, t)
    init = gradient_profile(records[0], layers)
    profiles = [gradient_profile(r, layers) for r in window]
    ratio = common.median_ratio([p["ratio"] for p in profiles])
    if math.isnan(ratio):
        return []
    slopes = [p["slope"] for p in profiles if math.isfinite(p["slope"])]
    slope = float(np.median(slopes)) if slopes else math.nan
    names = init["names"]
    g_now = common.median_over(window, "grad_norm", names)
    evidence = {
        "ratio_first_last": ratio,
        "ratio_first_last_init": init["ratio"],
        "log10_slope_per_layer": slope,
        "grad_norm": {n: float(v) for n, v in zip(names, g_now)},
        "output_layer": profiles[-1]["output"],
        **common.rests_on(window),
    }
    finite = g_now[np.isfinite(g_now) & (g_now > 0)]
    output = profiles[-1]["output"]
    if ratio < t.vanishing_warning and len(finite):
        severity = "error" if ratio < t.vanishing_error else "warning"
        upto = names.index(output) if output in names else len(names)
        last = g_now[upto] if upto < len(names) else finite[-1]
        norms = {i.name for i in layers if i.role == "norm"}  # gains: of another scale
        starving = [n for n, v in zip(names[:upto], g_now)
                    if v < last * t.vanishing_warning and n not in norms]
        per_layer = f", shrinking about {10 ** max(slope, 0):.1f}x per layer" \
            if math.isfinite(slope) else ""
        return [
            Finding(
                "vanishing_gradient",
                severity,
                starving,
                evidence,
                f"The gradient vanishes toward the input: the first layer gets {common.fmt(ratio)} "
                f"of the output layer's gradient norm{per_layer}"
                + (f"; {len(starving)} layer(s) barely learn ({', '.join(starving[:3])}"
                   f"{', ...' if len(starving) > 3 else ''})." if starving else "."),
                ALL_FIXES,
            )
        ]
    if ratio > t.exploding_warning and len(finite):
        severity = "error" if ratio > t.exploding_error else "warning"
        # The input side as the ratio reads it: the first weight layer, not a norm's gain.
        weights = {i.name for i in layers if has_weight(i)}
        firsts = [v for n, v in zip(names, g_now) if n in weights and math.isfinite(v) and v > 0]
        first = firsts[0] if firsts else finite[0]
        growing = [n for n, v in zip(names, g_now) if v > first / t.exploding_warning]
        return [
            Finding(
                "exploding_gradient",
                severity,
                growing,
                evidence,
                f"The gradient grows toward the input: the first layer gets {common.fmt(ratio)}x "
                f"the output layer's gradient norm"
                + (f", growing about {common.fmt(10 ** max(-slope, 0))}x per layer."
                   if math.isfinite(slope) and len(names) > 2 else "."),
                ["weight-init", "batchnorm", "gradnorm"],
            )
        ]
    return []


def zero_gradient(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    """Layers on the loss path whose gradient is exactly 0 on every recent sampled step."""
    window = common.recent(records, t)
    names = common.reached_names(layers)
    if not names:
        return []
    g = np.stack([common.values(r, "grad_norm", names) for r in window])
    # NaN: the layer did not run at that step; it must be 0 on every step it ran.
    zero = [n for n, col in zip(names, g.T)
            if (col[~np.isnan(col)] == 0.0).all() and not np.isnan(col).all()]
    if not zero:
        return []
    last = window[-1]
    profile = gradient_profile(last, layers)
    out = profile["output"]
    cause = "no gradient flows back through the layers after them"
    head = last.layers[out] if out is not None else None
    # Weights are read after the step's update; ||W0|| = 0 shows as a NaN weight_change.
    zero_init = head is not None and (head.weight_norm == 0.0 or (
        last is records[0] and math.isnan(head.weight_change) and head.weight_norm > 0))
    if zero_init:
        cause = (f"the output layer {out} is all zeros (zero-initialised), so nothing "
                 "reaches the layers before it until it has learned")
    else:
        depth = {n: i for i, n in enumerate(names)}
        dead = [n for n in names if last.layers[n].act_dead >= 1.0
                and depth[n] >= depth[zero[0]]]
        if dead:
            after = ", ".join(dead[:3]) + (", ..." if len(dead) > 3 else "")
            cause = (f"every unit of the activation after {after} is dead (<= 0 for the "
                     "whole batch), so it passes back nothing")
    return [
        Finding(
            "zero_gradient",
            "error",
            zero,
            {"output_layer": out, "cause": cause, **common.rests_on(window)},
            f"{len(zero)} layer(s) get a gradient of exactly 0 ({', '.join(zero[:3])}"
            f"{', ...' if len(zero) > 3 else ''}): {cause}.",
            ["weight-init", "batchnorm"],
        )
    ]


def unused_layers(layers: Sequence[LayerInfo]) -> list[Finding]:
    unused = [i.name for i in sorted(layers, key=lambda i: i.depth) if i.trainable and not i.used]
    if not unused:
        return []
    return [
        Finding(
            "unused_layers",
            "info",
            unused,
            {"unused": unused},
            f"{len(unused)} trainable layer(s) get no gradient at all ({', '.join(unused[:3])}"
            f"{', ...' if len(unused) > 3 else ''}): they do not feed the loss (an unused "
            "head or branch), so they are left out of every ratio.",
            [],
        )
    ]


def through_time(records: Sequence[StepRecord], t: Thresholds) -> list[Finding]:
    """dLoss/dx at the first time step against the last, per recurrent module: the
    gradient vanishing or exploding through time. Read on the recent records; only
    where they have no ratio left to read (an explosion saturated the units and the
    gradient is 0 at every step) an explosion at initialisation is reported, the cause
    of what followed. A profile that training mended is not."""
    found, measured = _through_time(common.recent(records, t), t, "")
    if not measured and records and records[0].time_grad:
        early, _ = _through_time(records[:1], t, " at initialisation")
        found = [f for f in early if f.id == "exploding_through_time"]
    return found


def _through_time(records: Sequence[StepRecord], t: Thresholds, when: str
                  ) -> tuple[list[Finding], bool]:
    """The findings of `records`, and whether any module had a ratio to read."""
    window = [r for r in records if r.time_grad]
    if not window:
        return [], False
    modules = list(dict.fromkeys(n for r in window for n in r.time_grad))
    ratios: dict[str, float] = {}
    steps: dict[str, int] = {}
    profile: dict[str, list[float]] = {}
    for name in modules:
        series = [r.time_grad[name] for r in window if len(r.time_grad.get(name, ())) > 1]
        read = [(first_last_ratio(s), s) for s in series]
        read = sorted((p for p in read if math.isfinite(p[0])), key=lambda p: p[0])
        if read:
            # The median step's profile, whose ratio it is: every number the finding
            # gives (the ratio, the decay per step, the profile) is read at one step.
            ratios[name], profile[name] = read[(len(read) - 1) // 2]
            steps[name] = len(profile[name])
    # The decay per step is fitted over the steps whose gradient is not 0 (the earliest
    # ones can underflow to exactly 0).
    decays = {n: 10 ** -slope(profile[n]) for n in ratios}
    evidence = {
        "ratio_first_last_step": ratios,
        "decay_per_step": decays,
        "time_steps": steps,
        "grad_per_step": profile,
        **common.rests_on(window),
    }
    vanishing = {n: r for n, r in ratios.items() if r < t.through_time_warning}
    exploding = {n: r for n, r in ratios.items() if r > 1 / t.through_time_warning}
    found = []
    if vanishing:
        worst = min(vanishing, key=lambda n: vanishing[n])
        ratio = vanishing[worst]
        share = ("exactly 0 (the backward pass's values underflowed)"
                 if ratio == 0 else common.fmt(ratio))
        found.append(Finding(
            "vanishing_through_time",
            "error" if ratio < t.through_time_error else "warning",
            list(vanishing), evidence,
            f"The gradient vanishes through time in {worst}{when}: the first of "
            f"{steps[worst]} time steps gets {share} of the last one's gradient "
            f"(x{decays[worst]:.2f} per step backward in time), so early inputs barely "
            "influence learning.",
            ["weight-init"],
        ))
    if exploding:
        worst = max(exploding, key=lambda n: exploding[n])
        ratio = exploding[worst]
        found.append(Finding(
            "exploding_through_time",
            "error" if ratio > 1 / t.through_time_error else "warning",
            list(exploding), evidence,
            f"The gradient explodes through time in {worst}{when}: the first of "
            f"{steps[worst]} time steps gets {common.fmt(ratio)}x the last one's gradient "
            f"(x{decays[worst]:.2f} per step backward in time): the recurrent weights "
            "amplify it. Re-initialise them orthogonally (weight-init) or clip the "
            "gradient norm (torch.nn.utils.clip_grad_norm_).",
            ["weight-init"],
        ))
    return found, bool(ratios)


def non_finite(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], epochs: Sequence[EpochRecord]
) -> list[Finding]:
    # A trainable layer's measured gradient is never NaN unless it blew up (absent
    # gradients of a layer that ran count as 0); a NaN anywhere in the forward pass
    # reaches the gradients too. A layer that did not run at that step (a branch not
    # taken, a stage of layer-wise training that does not use it) records NaN
    # gradient and activation statistics, "not measured": no evidence.
    trainable = set(common.trainable_names(layers))
    bad_layers: list[str] = []
    first_step: int | None = None
    for r in records:
        bad = [n for n, s in r.layers.items()
               if (n in trainable and s.grad_non_finite) or math.isinf(s.act_mean)]
        if bad or math.isinf(r.loss):
            first_step = r.step if first_step is None else first_step
        bad_layers += [n for n in bad if n not in bad_layers]
    # An epoch's NaN loss is "not given" where no step's loss was (Lightning's manual
    # optimisation returning nothing): only a loss the run gave can be non-finite.
    given = any(math.isfinite(r.loss) for r in records) or any(
        math.isfinite(e.train_loss) for e in epochs)
    loss_bad = [e.epoch for e in epochs
                if math.isinf(e.train_loss) or (math.isnan(e.train_loss) and given)]
    if first_step is None and not loss_bad:
        return []
    when = ""
    # Step 0's loss and gradients come from the initial weights: no update, so no
    # learning rate, had a part in them.
    cause = ("training diverged (a lower learning rate is often enough; an operation such as log, "
             "sqrt or a division in forward can also make NaN on some inputs)")
    if first_step is not None:
        # Only sampled steps are looked at: between the last finite one and this one,
        # any step may have been the first.
        before = max((r.step for r in records if r.step < first_step), default=None)
        when = (f" at step {first_step}" if before is None or before == first_step - 1
                else f" by step {first_step} (sampled steps only: step {before} was finite)")
        if first_step == 0:
            when = " at the first step, before any update"
            cause = ("the forward pass makes them from the weights the run started with "
                     "(under vgdiag.watch: had when the watch began), so the learning rate "
                     "is not the cause: look for NaN or inf in the data, an operation such "
                     "as log, sqrt or a division in forward, or an init far too large")
    return [
        Finding(
            "non_finite",
            "error",
            bad_layers,
            {"first_step": first_step, "epochs_with_non_finite_loss": loss_bad,
             **common.rests_on(records)},
            f"The loss, gradients or activations became NaN or infinite{when}: {cause}.",
            ["batchnorm", "weight-init"],
        )
    ]


def weights_blown_up(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    """Layers thrown far from their initial weights: updates too large for them.

    Layers that apply a weight matrix only (a loose scale started near 0, LayerScale's
    1e-6, is meant to grow by orders of magnitude), and only where the weights are also
    far past any init's scale: a head started at 1e-5 that grows to a normal scale has
    moved 1e3x its start by learning.
    """
    infos = {info.name: info for info in layers if info.fan_in > 0 and info.num_params > 0}
    names = [n for n in common.reached_names(layers) if n in infos]
    # rms(W) * sqrt(fan_in) per unit of weight_norm: how much the layer scales its input
    per_norm = np.array([math.sqrt(infos[n].fan_in / infos[n].num_params) for n in names])
    largest: dict[str, float] = {}  # ||W - W0|| / ||W0|| at its largest, per layer
    first_step: int | None = None  # the first sampled step past the limit
    for r in records:
        scale = common.values(r, "weight_norm", names) * per_norm
        for n, c, s in zip(names, common.values(r, "weight_change", names), scale):
            # inf: the weights themselves overflowed, the furthest a layer can be thrown.
            # Both: far from where it started and far past any init's scale.
            if c >= t.blown_up_warning and not s < t.blown_up_scale:  # (NaN: overflowed)
                largest[n] = max(largest.get(n, 0.0), float(c))
                first_step = r.step if first_step is None else first_step
    if not largest:
        return []
    top = max(largest, key=lambda n: largest[n])
    return [
        Finding(
            "weights_blown_up",
            "error" if largest[top] >= t.blown_up_error else "warning",
            [n for n in names if n in largest],
            {"weight_change": largest, "first_step": first_step, **common.rests_on(records)},
            f"The updates threw the weights off: {top} "
            + (f"moved {common.fmt(largest[top])}x its initial norm"
               if math.isfinite(largest[top]) else "overflowed to infinity")
            + f" (past {common.fmt(t.blown_up_warning)}x from step {first_step}), "
            "so it no longer holds what it learned: the learning rate is too large for "
            "these gradients (lower the learning rate, or clip the gradient norm).",
            [],
        )
    ]


def input_side_frozen(
    records: Sequence[StepRecord], layers: Sequence[LayerInfo], t: Thresholds
) -> list[Finding]:
    if records[-1].step == 0:
        return []
    # An embedding moves only the rows a batch looks up, from an N(0, 1) start, and a
    # norm layer's scale starts at 1: their change relative to the initial norm is small
    # by construction, so they are not judged against the output layer.
    # Nor is a lone scale or temperature (no weight matrix), where matrices exist.
    roles = {info.name: info.role for info in layers}
    names = [n for n in common.reached_names(layers) if roles[n] not in ("embedding", "norm")]
    matrix = {info.name for info in layers if can_be_output(info)}
    if any(n in matrix for n in names):
        names = [n for n in names if n in matrix]
    change = common.values(records[-1], "weight_change", names)
    ok = np.flatnonzero(np.isfinite(change))
    if len(ok) < 2 or change[ok[-1]] <= 0:
        return []
    first, last = change[ok[0]], change[ok[-1]]
    ratio = float(first / last)
    # Relative alone, a first layer thrown 4e9x its norm would "barely change" beside
    # an output layer thrown 3e12x (weights_blown_up says what happened there).
    if ratio >= t.frozen_change_ratio or first >= t.frozen_change_max:
        return []
    frozen = [names[i] for i in ok
              if change[i] < last * t.frozen_change_ratio and change[i] < t.frozen_change_max]
    return [
        Finding(
            "input_side_frozen",
            "warning",
            frozen,
            {
                "weight_change": {names[i]: float(change[i]) for i in ok},
                "ratio_first_last": ratio,
                **common.rests_on(records[-1:]),
            },
            f"Input-side weights barely change: the first layer moved {common.fmt(float(first))} "
            f"of its initial norm against {common.fmt(float(last))} for the output layer.",
            ["adam", "skip", "layerwise", "gradnorm", "batchnorm"],
        )
    ]
