"""The axis a histogram's data needs, shared by the HTML report and the dashboard.

The probe bins log10|grad| over a fixed, very wide range (every gradient fits); drawn
on it, a real spread of two decades would fill two or three bars. Readers draw the
span of the bins that hold anything instead.
"""

from __future__ import annotations

import numpy as np

from vgdiag.engine.records import Histogram


def occupied_range(*hists: Histogram, skip_floor: bool = False) -> tuple[float, float]:
    """The span of the bins that hold anything, over all `hists`.

    With `skip_floor` the lowest bin, where the probe clamps zero gradients, does not
    stretch the axis (readers say how much it holds instead).
    """
    los, his = [], []
    for hist in hists:
        counts = hist.counts[1:] if skip_floor else hist.counts
        nonzero = np.flatnonzero(counts) + (1 if skip_floor else 0)
        if not nonzero.size:
            continue
        width = (hist.hi - hist.lo) / len(hist.counts)
        los.append(hist.lo + nonzero[0] * width)
        his.append(hist.lo + (nonzero[-1] + 1) * width)
    if not los:
        lo = min((h.lo for h in hists), default=0.0)
        hi = max((h.hi for h in hists), default=1.0)
    else:
        lo, hi = min(los), max(his)
    return (float(lo), float(hi)) if hi > lo else (float(lo), float(lo) + 1.0)


def floor_share(hist: Histogram) -> float:
    """The share of the values in the lowest bin (zeros, for log10|grad|)."""
    total = int(hist.counts.sum())
    return float(hist.counts[0]) / total if total else 0.0
