"""vgdiag: find vanishing and exploding gradients in PyTorch models.

    import vgdiag
    with vgdiag.watch(model, optimizer, every=1) as w:
        ...  # your own forward, backward, optimizer.step()
    w.history      # per sampled step: .step, .layers[name].grad_norm, ...
    w.findings()   # the diagnosis of what was recorded
"""

from vgdiag._version import __version__
from vgdiag.diagnosis import Thresholds, diagnose
from vgdiag.probe import Probe
from vgdiag.records import EpochRecord, Finding, LayerInfo, LayerStats, StepRecord
from vgdiag.watch import Watch, watch

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
