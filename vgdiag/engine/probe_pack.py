"""The one host copy of a sampled step: device numbers packed into one vector."""

from __future__ import annotations

import numpy as np
import torch

from vgdiag.engine.probe_kernels import stack


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
