"""The built-in deep MLP of the reference experiment, and weight initialisation.

Flatten -> depth x [Linear(., width) -> activation] -> Linear(width, classes), as an
nn.Sequential so module names are stable ("1", "3", ... for the Linear layers) and
plugins can do surgery on it like on any user's Sequential.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vgdiag.engine.defaults import Activation
from vgdiag.errors import UserError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    Activation.sigmoid: nn.Sigmoid,
    Activation.tanh: nn.Tanh,
    Activation.relu: nn.ReLU,
    Activation.leaky_relu: nn.LeakyReLU,
    Activation.gelu: nn.GELU,
}

# Gain of each activation for Xavier/He (torch.nn.init.calculate_gain names).
_GAIN_NAMES = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky-relu": "leaky_relu",
    "gelu": "relu",  # GELU behaves like ReLU for large inputs; PyTorch has no gain for it
}


def xavier_gain(activation: str) -> float:
    """The Xavier gain that keeps the signal's scale through `activation`.

    PyTorch's calculate_gain("sigmoid") is 1, which still shrinks the gradient ~4x per
    layer because sigmoid'(0) = 1/4; Glorot & Bengio's analysis (and the classic
    "4x the tanh bounds" rule for sigmoid) compensates with a gain of 4.
    """
    if activation == "sigmoid":
        return 4.0
    name = _GAIN_NAMES.get(activation, "linear")
    return float(nn.init.calculate_gain(name))  # type: ignore[arg-type]


INIT_CHOICES = "default | normal:STD | xavier | he"


def build_mlp(
    in_features: int,
    num_classes: int,
    depth: int = 7,
    width: int = 128,
    activation: str = "sigmoid",
) -> nn.Sequential:
    """The reference model: depth hidden Linear layers with an activation after each."""
    if activation not in ACTIVATIONS:
        raise UserError(
            f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}"
        )
    if depth < 1 or width < 1:
        raise UserError(f"--depth and --width must be at least 1, got {depth} and {width}")
    layers: list[nn.Module] = [nn.Flatten()]
    features = in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def parse_init(spec: str) -> tuple[str, float | None]:
    """'default' | 'normal:STD' | 'xavier' | 'he' -> (scheme, std)."""
    scheme, _, arg = spec.partition(":")
    scheme = scheme.strip().lower()
    if scheme == "normal":
        try:
            std = float(arg)
        except ValueError:
            std = math.nan
        if not math.isfinite(std) or std <= 0:
            raise UserError(f"--init normal:STD needs a positive number, got {spec!r}")
        return scheme, std
    if scheme in ("default", "xavier", "he") and not arg:
        return scheme, None
    raise UserError(f"unknown --init {spec!r}: use {INIT_CHOICES}")


def _init_recurrent(module: nn.RNNBase, scheme: str, std: float | None) -> None:
    """Orthogonal hidden-to-hidden weights (every singular value 1: the gradient through
    time neither shrinks nor grows from the weights, Saxe et al. 2014), Xavier input
    weights, zero biases, and an LSTM's forget-gate bias at 1 (it remembers from the
    start, Jozefowicz et al. 2015). 'normal:STD' draws every weight from N(0, STD)."""
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("bias"):
            nn.init.zeros_(param)
            if isinstance(module, nn.LSTM):  # gates in order input, forget, cell, output
                param[module.hidden_size : 2 * module.hidden_size].fill_(0.5)
        elif scheme == "normal":
            assert std is not None
            nn.init.normal_(param, 0.0, std)
        elif name.startswith("weight_hh"):
            for gate in param.split(module.hidden_size):  # one square block per gate
                nn.init.orthogonal_(gate)
        else:
            nn.init.xavier_uniform_(param)


def init_weights(model: nn.Module, spec: str, activation: str = "sigmoid",
                 output: str | None = None) -> nn.Module:
    """Re-initialise every trainable Linear, Conv and recurrent layer of `model` in
    place; biases to zero. Frozen layers are left as they are.

    'default' leaves PyTorch's initialisation alone. 'normal:STD' draws N(0, STD) as in
    the reference experiment. 'xavier' and 'he' use the gain of `activation`. A
    recurrent layer (RNN, LSTM, GRU) gets orthogonal recurrent weights whatever the
    scheme but 'normal' (see _init_recurrent). `output` names the output layer: under
    'xavier' and 'he' it gets Xavier with gain 1, since no activation follows it (the
    logits): sigmoid's gain of 4 there starts the loss far above ln(classes).
    """
    scheme, std = parse_init(spec)
    if scheme == "default":
        return model
    gain_name = _GAIN_NAMES.get(activation, "linear")
    head = model.get_submodule(output) if output is not None else None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.RNNBase):
                _init_recurrent(module, scheme, std)
                continue
            if not isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                continue
            # A frozen parameter (a pretrained backbone) is kept: drawn afresh it would
            # never train again (vgdiag.surgery.trains).
            if module.bias is not None and module.bias.requires_grad:
                nn.init.zeros_(module.bias)
            if not module.weight.requires_grad:
                continue
            if module is head and scheme != "normal":
                nn.init.xavier_normal_(module.weight, gain=1.0)
            elif scheme == "normal":
                assert std is not None
                nn.init.normal_(module.weight, 0.0, std)
            elif scheme == "xavier":
                nn.init.xavier_normal_(module.weight, gain=xavier_gain(activation))
            else:
                nonlinearity = "leaky_relu" if gain_name == "leaky_relu" else "relu"
                nn.init.kaiming_normal_(
                    module.weight, nonlinearity=nonlinearity  # type: ignore[arg-type]
                )
    return model
