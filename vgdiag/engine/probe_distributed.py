"""Statistics across ranks: sharded parameters (FSDP, DTensor) and their replicas.

With DDP the gradients are already averaged when optimizer.step() runs, so nothing
is exchanged. With sharded parameters each rank holds a slice of every parameter:
the per-parameter sums of squares (and L1 sums, sizes, histogram counts) are added
across ranks with one all_reduce per sampled step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from vgdiag.engine.probe_kernels import HIST_BINS

DISTRIBUTED_MODES = ("auto", "sharded", "none")


def is_dtensor(t: torch.Tensor) -> bool:
    return callable(getattr(t, "to_local", None)) and hasattr(t, "placements")


def local(t: torch.Tensor) -> torch.Tensor:
    """The rank's own slice of a DTensor; any other tensor as is."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def original_shapes(model: nn.Module, params: Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
    """Each parameter's full shape (FSDP1 shows flat slices; DTensors their full shape)."""
    shapes = {id(p): tuple(p.shape) for p in params}
    for module in model.modules():
        flat = getattr(getattr(module, "_handle", None), "flat_param", None)
        originals = getattr(flat, "_params", None)
        full = getattr(flat, "_shapes", None)
        if originals is not None and full is not None:
            for p, shape in zip(originals, full):
                shapes[id(p)] = tuple(shape)
    return [shapes[id(p)] for p in params]


def rank_and_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sharding(
    model: nn.Module, params: Sequence[torch.Tensor], mode: str
) -> tuple[bool, np.ndarray]:
    """Whether parameters are sharded across ranks, and each one's replica count.

    After the all_reduce a parameter held whole by R ranks (or sharded within groups
    that repeat R times, as in hybrid sharding) has been counted R times.
    """
    n = len(params)
    ones = np.ones(n)
    if mode == "none":
        return False, ones
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        if mode == "sharded":
            raise ValueError("distributed='sharded' needs torch.distributed to be initialised")
        return False, ones
    world = dist.get_world_size()
    fsdp_group = _fsdp1_group_size(model)
    dtensors = [is_dtensor(p) for p in params]
    sharded = mode == "sharded" or fsdp_group is not None or any(dtensors)
    if not sharded:
        return False, ones
    replicas = np.empty(n)
    for k, p in enumerate(params):
        if dtensors[k]:
            mesh = p.device_mesh  # type: ignore[attr-defined]
            shards = math.prod(
                mesh.size(d) for d, pl in enumerate(p.placements)  # type: ignore[attr-defined]
                if pl.is_shard()
            )
            replicas[k] = world / max(shards, 1)
        elif fsdp_group is not None:
            replicas[k] = world / fsdp_group
        else:
            replicas[k] = world  # a plain tensor: every rank holds all of it
    return True, replicas


def _fsdp1_group_size(model: nn.Module) -> int | None:
    for module in model.modules():
        if type(module).__name__ == "FullyShardedDataParallel":
            group = getattr(module, "process_group", None)
            size = group.size() if group is not None and hasattr(group, "size") else None
            return int(size) if size else torch.distributed.get_world_size()
    return None


def reduce_across_ranks(
    w0_norms: list[torch.Tensor],
    numels: list[int],
    pieces: dict[str, Any],
    w_norm: list[torch.Tensor],
    change: list[torch.Tensor],
    update: list[torch.Tensor],
    hist_parts: list[torch.Tensor],
) -> torch.Tensor:
    """Sum per-parameter squares (and L1 sums, sizes, histogram counts) over ranks."""
    device = w_norm[0].device
    n = len(numels)
    # Every rank sends the same layout: a parameter without a local gradient adds 0.
    l2 = torch.zeros(n, device=device, dtype=torch.float64)
    l1 = torch.zeros(n, device=device, dtype=torch.float64)
    if pieces["present"]:
        idx = torch.tensor(pieces["present"], device=device)
        l2[idx] = torch.stack(pieces["l2"]).double().square()
        l1[idx] = torch.stack(pieces["l1"]).double()
    rows = [l2, l1]
    for group in (w_norm, change, w0_norms, update):
        if group:
            rows.append(torch.stack(group).double().square())
    rows.append(torch.tensor(numels, device=device, dtype=torch.float64))
    rows += [h.double().reshape(-1) for h in hist_parts]
    vector = torch.cat(rows)
    torch.distributed.all_reduce(vector)
    return vector

def split_reduced(
    vector: np.ndarray, n: int, replicas: np.ndarray, weight_of: list[int], n_update: int,
    hist_meta: list[tuple[str, int, float, float]],
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    for key, length, squared in (("l2", n, True), ("l1", n, False), ("wn", n, True),
                                 ("ch", n, True), ("w0n", n, True),
                                 ("up", n_update, True), ("numel", n, False)):
        v = vector[offset : offset + length] / replicas[:length]
        out[key] = np.sqrt(np.maximum(v, 0.0)) if squared else v
        offset += length
    # Histogram counts of a replicated weight were added once per replica.
    counts = vector[offset:].reshape(-1, HIST_BINS) if hist_meta else np.zeros((0, HIST_BINS))
    div = np.array([replicas[weight_of[li]] for _, li, _, _ in hist_meta])
    out["hist"] = (counts / div[:, None]).reshape(-1) if hist_meta else counts.reshape(-1)
    return out
