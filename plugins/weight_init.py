"""weight-init: re-initialise Linear/Conv weights so each layer passes the signal on.

Small initial weights make every layer's gradient factor small (REFERENCE.md, sign 4);
the reference fix draws N(0, 1.0); Xavier and He choose the scale from the fan-in/out
and the activation instead: the activation modules', or where the model calls its
activations as functions (`F.relu`), those a dry forward calls. Recurrent layers get
orthogonal recurrent weights (engine.models._init_recurrent). Frozen layers are left
alone: a pretrained backbone drawn afresh would never train again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial

from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.engine.models import init_weights
from vgdiag.plugin_api import Plugin, inspect_model, option
from vgdiag.surgery import (
    execution_order,
    find_modules,
    functional_kinds,
    output_layer_index,
    trains,
)

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
_INIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)
# A functional activation's kind (probe_functional.KINDS) -> its gain name.
_GAIN_OF_KIND = {1: "sigmoid", 2: "tanh", 0: "relu"}


def functional_activation(model: nn.Module, input_shape: tuple[int, ...] | None) -> str | None:
    """The most common activation *function* a dry forward calls (`F.relu(self.fc(x))`),
    as a gain name; None without an input shape or when the forward fails."""
    counts = functional_kinds(model, input_shape)
    return _GAIN_OF_KIND[counts.most_common(1)[0][0]] if counts else None


def trainable_layers(model: nn.Module) -> list[str]:
    """The layers weight-init draws afresh: frozen ones keep their (pretrained) weights."""
    return [name for name, m in find_modules(model, _INIT_TYPES) if trains(m)]


def dominant_activation(model: nn.Module) -> str | None:
    """The most common activation module's gain name ("sigmoid", "relu"...), None if none."""
    counts: Counter[str] = Counter()
    for module in model.modules():
        for kind, gain_name in _GAIN_OF:
            if isinstance(module, kind):
                counts[gain_name] += 1
                break
    return counts.most_common(1)[0][0] if counts else None


def _scheme(text: str) -> str:
    value = text.strip().lower()
    if value not in ("normal", "xavier", "he"):
        raise ValueError("choose one of normal, xavier, he")
    return value


@dataclass(frozen=True)
class WeightInitOptions:
    scheme: str | None = option(
        None, "normal | xavier | he (default: he for ReLU-family activations, xavier "
        "with sigmoid's gain 4 for sigmoid/tanh and others; normal when std is given)",
        parse=_scheme)
    std: float | None = option(
        None, "standard deviation for scheme=normal (default 1.0, the reference's value)")

    def __post_init__(self) -> None:
        if self.std is not None and self.scheme not in (None, "normal"):
            raise ValueError(f"std only applies to scheme=normal, not {self.scheme}")

    def spec(self) -> tuple[str | None, float | None]:
        """(scheme, std): scheme None means "choose from the activation"."""
        if self.std is not None or self.scheme == "normal":
            return "normal", 1.0 if self.std is None else self.std
        return self.scheme, None


class WeightInit(Plugin):
    name = "weight-init"
    summary = "re-initialise Linear/Conv weights larger (normal std, Xavier or He), biases 0"
    addresses = ("vanishing_gradient", "weights_concentrated", "exploding_gradient",
                 "saturated_activations", "dead_units", "loss_stalled", "non_finite",
                 "activations_growing", "vanishing_through_time", "exploding_through_time",
                 "zero_gradient")
    rank = 10
    Options = WeightInitOptions

    def applies(self, experiment: Experiment, options: WeightInitOptions) -> str | None:
        model = inspect_model(experiment)
        if not find_modules(model, _INIT_TYPES):
            return "no Linear, Conv or recurrent layers to re-initialise"
        if not trainable_layers(model):
            return "every Linear, Conv and recurrent layer is frozen"
        return None

    def transform(self, experiment: Experiment, options: WeightInitOptions) -> Experiment:
        scheme, std = options.spec()
        model = inspect_model(experiment)
        activation = dominant_activation(model) or functional_activation(
            model, experiment.input_shape)
        if scheme is None:
            scheme = "he" if activation in ("relu", "leaky-relu", "gelu") else "xavier"
        spec = f"normal:{std}" if scheme == "normal" else scheme
        # The gain follows the activation most layers use; without activation modules
        # (functional calls) Xavier falls back to gain 1.
        gain_from = activation or "linear"
        layers = trainable_layers(model)
        output = None  # normal:STD draws every layer alike: no dry forward to find it
        if scheme != "normal":
            order = execution_order(model, experiment.input_shape)
            last = output_layer_index(order)
            output = order[last][0] if last is not None else None
        note = {"scheme": scheme, "std": std, "gain_from": gain_from, "layers": layers,
                "output_gain_1": output}
        transform = partial(init_weights, spec=spec, activation=gain_from, output=output)
        return self.with_model_transform(experiment, transform, note)
