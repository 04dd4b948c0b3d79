"""What a run folder's config.json says about where a run ran (versions, device)."""

from __future__ import annotations

import platform
from typing import Any

import torch

from vgdiag._version import __version__


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and CPU threads, for config.json."""
    return {
        "vgdiag_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
        "device_name": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine()
        ),
    }
