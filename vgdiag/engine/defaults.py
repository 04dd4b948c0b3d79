"""The engine's defaults and choice names, importable without torch.

The command line builds its options and `--help` from these, so `vgdiag --help` starts
without loading PyTorch.
"""

from __future__ import annotations

from enum import StrEnum

# A sampled step of the reference MLP costs about 0.4 of a plain step (every statistic
# is exact; docs/PERFORMANCE.md): sampling every 25th step keeps the probe near 2% of
# the training time while still giving a point every few seconds of a run.
DEFAULT_EVERY = 25
DEFAULT_HIST_EVERY = 10  # histograms on every 10th sampled step
# A diagnosis rests on medians over recent sampled steps and on trends: at the default
# rate a short run samples at least this many steps (every step of a shorter run).
MIN_SAMPLED_STEPS = 50


class Activation(StrEnum):
    """Activations of the built-in MLP (engine.models.ACTIVATIONS builds them)."""

    sigmoid = "sigmoid"
    tanh = "tanh"
    relu = "relu"
    leaky_relu = "leaky-relu"
    gelu = "gelu"


class Optimizer(StrEnum):
    """Optimizers by name (engine.experiment.OPTIMIZERS builds them)."""

    sgd = "sgd"
    adam = "adam"
