"""The one host copy of a sampled step: what goes into it and how it is read back."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vgdiag.engine.probe_distributed import local, reduce_across_ranks
from vgdiag.engine.probe_flat import FlatStats, unpack
from vgdiag.engine.probe_kernels import (
    foreach_norm,
    grad_histograms,
    histograms,
    l1_norms,
    stack,
)

if TYPE_CHECKING:
    from vgdiag.engine.probe import Probe


def host_copy(scalars: dict[str, list[torch.Tensor]], vectors: dict[str, list[torch.Tensor]],
              device: torch.device) -> dict[str, np.ndarray]:
    """Copy 0-d tensors (by group) and 1-d tensors (by group) to the host at once.

    The scalars are stacked in one kernel, the vectors appended, the lot copied with
    one `.cpu()` (the one synchronisation of a sampled step); each group comes back as
    a float64 array under its key.
    """
    flat = [stack([t for group in scalars.values() for t in group], device)]
    flat += [v.reshape(-1).to(device, torch.float64) for vs in vectors.values() for v in vs]
    host = torch.cat(flat).cpu().numpy()
    chunks: dict[str, np.ndarray] = {}
    offset = 0
    for key, group in [*scalars.items(), *vectors.items()]:
        n = len(group) if key in scalars else sum(v.numel() for v in group)
        chunks[key] = host[offset : offset + n]
        offset += n
    return chunks


def gradient_pieces(flat: FlatStats | None, present: list[int], grads: list[torch.Tensor],
                    keep: bool) -> dict[str, Any]:
    """The gradients' statistics (on the device) for the parameters in `present`.

    Into the flat buffers' rows where the gradients fit them ("flat"), else per tensor
    ("l2", "l1"); the gradients themselves are kept when `keep` (histogram steps).
    """
    fit = flat.grad_rows(present, grads) if flat is not None else False
    return {
        "present": present,
        "flat": fit,
        "l2": foreach_norm(grads, 2.0) if not fit else [],
        "l1": l1_norms(grads) if not fit else [],
        "grads": grads if keep else None,
    }


def parameter_groups(probe: Probe, pieces: dict[str, Any], with_update: bool,
                     scalars: dict[str, list[torch.Tensor]],
                     vectors: dict[str, list[torch.Tensor]]) -> int:
    """Add the step's parameter statistics to what is copied; returns the update count.

    Flat buffers (probe_flat) give per-row norms in one vector; otherwise one
    0-d tensor per parameter and statistic, or under sharding one vector of squares
    already added across ranks (probe_distributed).
    """
    params = probe._values()
    first = probe._w0_norm is None  # ||W0|| is constant: read once
    flat = probe._flat
    if flat is not None:
        scalars.update(l2=pieces["l2"], l1=pieces["l1"])  # empty unless a gradient did not fit
        updated = flat.weight_rows(params, with_update)
        vectors["flat"] = [flat.rows]
        if first:
            vectors["w0_rows"] = [flat.w0_rows]
        return flat.count if updated else 0
    copies = probe._copies
    w_norm = foreach_norm(params)
    change = copies.change_norms(params)
    update = copies.update_norms(params) if with_update else []
    if probe._sharded:
        numels = [local(p).numel() for p in probe._tensors]
        vectors["reduced"] = [reduce_across_ranks(copies.w0_norms(), numels, pieces, w_norm,
                                                  change, update, vectors["hist"])]
        vectors["hist"] = []  # added across ranks inside "reduced"
    else:
        scalars.update(l2=pieces["l2"], l1=pieces["l1"], wn=w_norm, ch=change, up=update)
        if first:
            scalars["w0n"] = copies.w0_norms()
    return len(update)


def read_back(probe: Probe, chunks: dict[str, np.ndarray], pieces: dict[str, Any],
              n_update: int, hist_meta: list[tuple[str, int, float, float]]) -> None:
    """Turn the host copy into per-parameter norms under the keys assemble() reads."""
    if probe._flat is not None:
        unpack(chunks, pieces["present"], probe._flat, pieces["flat"], n_update > 0)
    if probe._sharded:
        chunks.update(probe._split_reduced(chunks.pop("reduced"), n_update, hist_meta))
    elif probe._w0_norm is None:
        probe._w0_norm = chunks["w0n"].tolist()


Hists = tuple[list[torch.Tensor], list[tuple[str, int, float, float]]]


def _per_layer(probe: Probe, present: list[int], grads: list[torch.Tensor]
               ) -> tuple[dict[int, list[torch.Tensor]], Iterable[int]]:
    layout = probe._layout
    per_layer: dict[int, list[torch.Tensor]] = {}
    for k, g in zip(present, grads):
        per_layer.setdefault(layout.owner_of[k], []).append(g.reshape(-1))
    return per_layer, range(len(layout.owners)) if probe._sharded else sorted(per_layer)


def layer_histograms(probe: Probe, present: list[int], grads: list[torch.Tensor],
                     grad_hists: Hists | None = None) -> Hists:
    """Weight and log10|grad| histograms per layer (probe_kernels.histograms); the
    gradients' taken already where `grad_hists` holds them."""
    weights = [(i, local(probe._tensors[k]).detach().reshape(-1))
               for i, k in enumerate(probe._layout.weight_param)]
    per_layer, layers = _per_layer(probe, present, grads)
    return histograms(weights, per_layer, layers, probe._sharded, probe._device, grad_hists)


def scaled_grad_histograms(probe: Probe, present: list[int], grads: list[torch.Tensor],
                           scale: torch.Tensor) -> Hists:
    """The gradients' histograms now, divided by a loss scaler's scale: taken when
    measured, since the scaler may unscale `.grad` in place before the update ends."""
    per_layer, layers = _per_layer(probe, present, grads)
    return grad_histograms(per_layer, layers, probe._device, scale.to(probe._device))
