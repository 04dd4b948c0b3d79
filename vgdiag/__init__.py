"""vgdiag: find vanishing and exploding gradients in PyTorch models.

    import vgdiag
    with vgdiag.watch(model, optimizer, out="runs/mine") as w:
        ...  # your own forward, backward, optimizer.step(); w.observe_loss(loss)
    w.history      # per sampled step: .step, .layers[name].grad_norm, ...
    w.findings()   # the diagnosis of what was recorded
    # runs/mine is a run folder: vgdiag report runs/mine, vgdiag view runs/mine

The public names are loaded on first use, so `import vgdiag` (and `vgdiag --version`)
does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vgdiag._version import __version__

_LAZY = {
    "EpochRecord": "vgdiag.engine.records",
    "Finding": "vgdiag.engine.records",
    "LayerInfo": "vgdiag.engine.records",
    "LayerStats": "vgdiag.engine.records",
    "StepRecord": "vgdiag.engine.records",
    "Thresholds": "vgdiag.engine.diagnosis",
    "diagnose": "vgdiag.engine.diagnosis",
    "Probe": "vgdiag.engine.probe",
    "Watch": "vgdiag.engine.watch",
    "watch": "vgdiag.runs.watch_folder",
}

__all__ = [
    "EpochRecord",
    "Finding",
    "LayerInfo",
    "LayerStats",
    "Probe",
    "StepRecord",
    "Thresholds",
    "Watch",
    "__version__",
    "diagnose",
    "watch",
]

if TYPE_CHECKING:
    from vgdiag.engine.diagnosis import Thresholds, diagnose
    from vgdiag.engine.probe import Probe
    from vgdiag.engine.records import EpochRecord, Finding, LayerInfo, LayerStats, StepRecord
    from vgdiag.engine.watch import Watch
    from vgdiag.runs.watch_folder import watch


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vgdiag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
