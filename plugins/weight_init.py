"""weight-init: re-initialise Linear/Conv weights so each layer passes the signal on.

Small initial weights make every layer's gradient factor small (REFERENCE.md, sign 4);
the reference fix draws N(0, 1.0); Xavier and He choose the scale from the fan-in/out
and the activation instead.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.engine.models import init_weights
from vgdiag.plugin_api import Plugin, inspect_model
from vgdiag.surgery import find_modules

# Activation module -> the activation name vgdiag.models.init_weights knows the gain of.
_GAIN_OF: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.LeakyReLU, "leaky-relu"),
    (nn.GELU, "gelu"),
    (nn.ReLU6, "relu"),  # before Hardtanh: ReLU6 subclasses it
    (nn.Sigmoid, "sigmoid"),
    (nn.Hardsigmoid, "sigmoid"),
    (nn.LogSigmoid, "sigmoid"),
    (nn.Tanh, "tanh"),
    (nn.Hardtanh, "tanh"),
    (nn.Softsign, "tanh"),
    (nn.ReLU, "relu"),
    (nn.PReLU, "relu"),
    (nn.RReLU, "relu"),
    (nn.ELU, "relu"),
    (nn.SELU, "relu"),
    (nn.CELU, "relu"),
    (nn.SiLU, "relu"),
    (nn.Mish, "relu"),
    (nn.Softplus, "relu"),
    (nn.Hardswish, "relu"),
)
_INIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def dominant_activation(model: nn.Module) -> str | None:
    """The most common activation module's gain name ("sigmoid", "relu"...), None if none."""
    counts: Counter[str] = Counter()
    for module in model.modules():
        for kind, gain_name in _GAIN_OF:
            if isinstance(module, kind):
                counts[gain_name] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


class WeightInit(Plugin):
    name = "weight-init"
    summary = "re-initialise Linear/Conv weights larger (normal std, Xavier or He), biases 0"
    options = {
        "scheme": "normal | xavier | he (default: he for ReLU-family activations, xavier "
        "for sigmoid/tanh and others; normal when std is given)",
        "std": "standard deviation for scheme=normal (default 1.0, the reference's value)",
    }

    def _spec(self, options: dict[str, str]) -> tuple[str | None, float | None]:
        scheme = self.choice_option(options, "scheme", ("normal", "xavier", "he"), None)
        std = self.float_option(options, "std", 1.0) if "std" in options else None
        if std is not None and scheme not in (None, "normal"):
            wanted = f"std only applies to scheme=normal, not {scheme}"
            raise self._bad("std", options["std"], wanted)
        if std is not None or scheme == "normal":
            return "normal", 1.0 if std is None else std
        return scheme, None

    def why_not(self, experiment: Experiment, options: dict[str, str]) -> str | None:
        self.check_options(options)
        self._spec(options)
        if not find_modules(inspect_model(experiment), _INIT_TYPES):
            return "no Linear or Conv layers to re-initialise"
        return None

    def transform(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        scheme, std = self._spec(options)
        model = inspect_model(experiment)
        activation = dominant_activation(model)
        if scheme is None:
            scheme = "he" if activation in ("relu", "leaky-relu", "gelu") else "xavier"
        spec = f"normal:{std}" if scheme == "normal" else scheme
        # The gain follows the activation most layers use; without activation modules
        # (functional calls) Xavier falls back to gain 1.
        gain_from = activation or "linear"
        layers = [name for name, _ in find_modules(model, _INIT_TYPES)]
        note = {"scheme": scheme, "std": std, "gain_from": gain_from, "layers": layers}
        transform = partial(init_weights, spec=spec, activation=gain_from)
        return self.with_model_transform(experiment, transform, note)
