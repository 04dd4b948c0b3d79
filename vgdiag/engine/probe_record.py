"""Host side of a sampled step: the numbers copied back, turned into a StepRecord."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vgdiag.engine.probe_kernels import HIST_BINS, TINY
from vgdiag.engine.probe_layers import clean_name
from vgdiag.engine.records import Histogram, LayerStats, StepRecord

if TYPE_CHECKING:
    from vgdiag.engine.probe import Probe
    from vgdiag.engine.probe_layout import LayerLayout


def overflowed(norms: list[float], tensors: list[torch.Tensor],
               of: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
    """Norms that came back inf from a float32 sum of squares, taken again in float64.

    A finite tensor of elements near 1e19 (a run diverging) overflows float32 when
    squared: its norm is finite, and float64 holds it. Rare, so the extra read of
    that one tensor costs nothing on any other step.
    """
    if math.inf not in norms:  # every step but a diverging one's: one C-level scan
        return
    with torch.no_grad():
        for k, v in enumerate(norms):
            if v != math.inf:
                continue
            t = of(tensors[k])
            if t is not None and t.dtype not in (torch.float64, torch.complex128):
                norms[k] = float(torch.linalg.vector_norm(t.detach(), dtype=torch.float64))


def assemble(
    probe: Probe,
    present: list[int],
    chunks: dict[str, np.ndarray],
    step: dict[str, Any],
    hist_meta: list[tuple[str, int, float, float]],
) -> StepRecord:
    # Plain Python on lists: for a few dozen numbers per layer it is several times
    # faster than numpy calls, whose fixed cost dominates at these sizes.
    nan = math.nan
    layout = probe._layout
    tensors = probe._tensors
    n_params = len(tensors)
    requires = [p.requires_grad for p in tensors]
    # Gradient norms per parameter: absent grads count as 0 for trainable parameters
    # of a layer that ran (no gradient reached it), as unmeasured for frozen ones and
    # for layers that did not run at this step (see not_run). Under sharding the ranks
    # may disagree on what ran, and their parameter numbers must not: 0 there.
    g2 = [0.0 if r else nan for r in requires]
    g1 = list(g2)
    skipped = set() if probe._sharded else not_run(layout, present)
    if probe._sharded:
        for k, (l2, l1) in enumerate(zip(chunks["l2"].tolist(), chunks["l1"].tolist())):
            if requires[k]:
                g2[k], g1[k] = l2, l1
        numel = chunks["numel"].tolist()
        w0n = chunks["w0n"].tolist()
    else:
        for k, l2, l1 in zip(present, chunks["l2"].tolist(), chunks["l1"].tolist()):
            g2[k], g1[k] = l2, l1
        for i in skipped:
            for k in layout.slices[i]:
                g2[k] = g1[k] = nan
        numel = [float(math.prod(s)) for s in layout.shapes]
        assert probe._w0_norm is not None
        w0n = probe._w0_norm
    wn, ch = chunks["wn"].tolist(), chunks["ch"].tolist()
    if not probe._sharded:
        overflowed(wn, tensors, lambda t: t)
        overflowed(g2, tensors, lambda t: t.grad)
    up = chunks["up"].tolist() if len(chunks["up"]) == n_params else [nan] * n_params
    # Under a loss scaler the backward pass ran on the scaled loss (probe_amp).
    scale = float(chunks["scale"][0]) if len(chunks.get("scale", ())) else 1.0
    if scale != 1.0 and probe._grads_scaled:
        g2 = [v / scale for v in g2]
        g1 = [v / scale for v in g1]
    gout = [v / scale for v in chunks["gout"].tolist()] if scale != 1.0 else chunks["gout"].tolist()
    act = chunks["act"].tolist()

    grad_out: dict[int, float] = {}
    offset = 0
    for i, count in step["gout_idx"]:
        grad_out[i] = math.sqrt(sum(v * v for v in gout[offset : offset + count]))
        offset += count
    act_of: dict[int, tuple[float, float, float, float]] = {}
    offset = 0
    for i, (n, units, parts) in step["act_idx"]:
        v = act[offset : offset + len(parts)]
        offset += len(parts)
        saturated = nan
        if units < 0:  # a count times TINY; NaN inputs make it NaN (non_finite reports it)
            saturated = round(v[2] / TINY) / n if math.isfinite(v[2]) else nan
        act_of[i] = (
            v[0],
            v[1] / math.sqrt(n - 1) if n > 1 else nan,
            saturated,
            v[2] / units if units > 0 else nan,
        )

    # A layer's parameters are one contiguous slice (layout.slices): its norms are one
    # C-level hypot of the slice, not a generator per statistic (this loop runs for
    # every layer of every sampled step).
    hypot = math.hypot
    layers: dict[str, LayerStats] = {}
    no_act = (nan, nan, nan, nan)
    for info, i in zip(probe.layers, layout.order):
        ks = layout.slices[i]
        first, end = ks.start, ks.stop
        g, w, w0 = hypot(*g2[first:end]), hypot(*wn[first:end]), hypot(*w0n[first:end])
        size = sum(numel[first:end])
        a = act_of.get(i, no_act)
        layers[info.name] = LayerStats(
            grad_norm=g,
            grad_mean_abs=sum(g1[first:end]) / size if size else nan,
            weight_norm=w,
            weight_change=hypot(*ch[first:end]) / w0 if w0 else nan,
            update_ratio=hypot(*up[first:end]) / w if w else nan,
            grad_output_norm=grad_out.get(i, nan),
            act_mean=a[0],
            act_std=a[1],
            act_saturated=a[2],
            act_dead=a[3],
            param_grad_norms={} if i in skipped else {pn: g2[k] for k, pn in layout.own[i]},
        )
    loss = float(chunks["loss"][0])
    record = StepRecord(step=probe.step, epoch=probe.epoch, loss=loss, layers=layers)
    offset = 0
    times = chunks["time"].tolist()
    if scale != 1.0:  # read in backward: scaled like the output gradients
        times = [v / scale for v in times]
    for name, length in step["time_idx"]:
        record.time_grad[name] = times[offset : offset + length]
        offset += length
    counts_all = chunks.get("hist", np.zeros(0)).reshape(-1, HIST_BINS)
    for (kind, li, lo, hi), counts in zip(hist_meta, counts_all):
        if kind == "grad" and not counts.any():
            continue  # no rank had a gradient for this layer (sharded, frozen)
        hist = Histogram(lo, hi, np.rint(np.nan_to_num(counts)).astype(np.int64))
        name = clean_name(layout.owners[li][0])
        record.hists(kind)[name] = hist
    return record


def not_run(layout: LayerLayout, present: list[int]) -> set[int]:
    """Layers whose forward did not run at this step and that got no gradient.

    Their gradient was not measured (a branch not taken, a stage of layer-wise
    training that does not use them): NaN, with no per-parameter norms, where a layer
    that ran and got no gradient records 0. A layer used functionally (attention's
    `out_proj`) gets a gradient without running its own forward: it is measured. A
    step whose forward the hooks did not see at all (a lazy model's first step)
    counts every layer as run.
    """
    if not layout.ran:
        return set()
    with_grad = {layout.owner_of[k] for k in present}
    return {i for i in range(len(layout.owners)) if i not in layout.ran and i not in with_grad}
