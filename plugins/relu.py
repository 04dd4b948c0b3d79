"""relu: swap saturating activation modules (sigmoid, tanh...) for non-saturating ones.

The derivative of a sigmoid is at most 1/4 and tends to 0 when it saturates, so each
such layer shrinks the gradient; ReLU's is 1 wherever a unit is active. The swap alone
is not the fix a careful engineer applies: PyTorch's default init, U(±1/sqrt(fan_in))
for weights *and* biases, makes each ReLU layer pass on about 1/2.4 of its input's
scale while the random biases stay, so after a few layers the biases dominate and most
units are dead (the reference's 7-layer MLP never learns real digits that way). The
layers that feed a new activation are therefore re-initialised for it by default:
He (Kaiming) normal weights for the replacement's gain, zero biases.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.engine.records import LayerInfo, StepRecord
from vgdiag.plugin_api import Plugin, inspect_model, option
from vgdiag.surgery import (
    call_sequence,
    execution_order,
    functional_kinds,
    is_layer,
    is_saturating,
    output_layer_index,
    replace_module,
    trains,
)

REPLACEMENTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}
LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope


def parse_init(text: str) -> str:
    """'he' | 'keep' | 'normal:STD' (checked), as given."""
    value = text.strip().lower()
    if value in ("he", "keep"):
        return value
    scheme, _, arg = value.partition(":")
    if scheme == "normal":
        try:
            std = float(arg)
        except ValueError:
            std = math.nan
        if math.isfinite(std) and std > 0:
            return f"normal:{std:g}"
    raise ValueError("give he, keep or normal:STD (a positive std, e.g. normal:0.05)")


@dataclass(frozen=True)
class ReluOptions:
    to: str = option("relu", "relu | leaky-relu | gelu: the replacement (default relu)",
                     choices=tuple(REPLACEMENTS))
    init: str = option(
        "he", "he | keep | normal:STD: how the layers feeding a replaced activation are "
        "re-initialised (default he: Kaiming normal for the new activation, zero bias; "
        "keep leaves the weights as they are)", parse=parse_init)


def saturating_activations(
    model: nn.Module, input_shape: tuple[int, ...] | None
) -> tuple[list[str], list[str]]:
    """Names of (hidden saturating activations, saturating activations after the output layer).

    An activation that runs after the last Linear/Conv layer shapes the model's output
    (a sigmoid for a binary task) and is kept.
    """
    order = execution_order(model, input_shape)
    last = output_layer_index(order)
    hidden: list[str] = []
    output: list[str] = []
    for i, (name, module) in enumerate(order):
        if is_saturating(module):
            (output if last is not None and i > last else hidden).append(name)
    return hidden, output


def feeding_layers(model: nn.Module, input_shape: tuple[int, ...] | None,
                   activations: list[str]) -> list[str]:
    """The Linear/Conv layer that runs last before each call of `activations`, in
    order: one shared `self.act` after six layers is fed by all six. The output layer
    never is (a shared activation also called on the output keeps the head's init)."""
    order = call_sequence(model, input_shape)
    # The first calls alone are the execution order: read from the same dry forward.
    first: dict[int, tuple[str, nn.Module]] = {}
    for name, module in order:
        first.setdefault(id(module), (name, module))
    ranked = list(first.values())
    last = output_layer_index(ranked)
    output = ranked[last][0] if last is not None else None
    wanted = set(activations)
    found: list[str] = []
    producer: str | None = None
    for name, module in order:
        if is_layer(module):
            producer = name
        elif (name in wanted and producer is not None and producer != output
              and producer not in found):
            found.append(producer)
    return found


def reinit_for(model: nn.Module, layers: list[str], to: str, init: str) -> None:
    """Re-initialise `layers` of `model` in place for the activation `to`; biases to 0."""
    with torch.no_grad():
        for name in layers:
            layer = model.get_submodule(name)
            weight = getattr(layer, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.requires_grad:
                _draw(weight, to, init)  # a frozen (pretrained) one is kept: see trains()
            bias = getattr(layer, "bias", None)
            if isinstance(bias, torch.Tensor) and bias.requires_grad:
                nn.init.zeros_(bias)


def _draw(weight: torch.Tensor, to: str, init: str) -> None:
    if init.startswith("normal:"):
        nn.init.normal_(weight, 0.0, float(init.partition(":")[2]))
    elif to == "leaky-relu":
        nn.init.kaiming_normal_(weight, a=LEAKY_SLOPE, nonlinearity="leaky_relu")
    else:  # GELU is ReLU-like for large inputs: He's gain is the usual choice
        nn.init.kaiming_normal_(weight, nonlinearity="relu")


def replace_saturating(
    model: nn.Module, input_shape: tuple[int, ...] | None, to: str = "relu",
    init: str = "keep",
) -> nn.Module:
    """Replace every hidden saturating activation module of `model` in place and, unless
    `init` is "keep", re-initialise the layers that feed them."""
    hidden, _ = saturating_activations(model, input_shape)
    feeding = feeding_layers(model, input_shape, hidden)
    for name in hidden:
        model = replace_module(model, name, REPLACEMENTS[to]())
    if init != "keep":
        reinit_for(model, feeding, to, init)
    return model


class Relu(Plugin):
    name = "relu"
    summary = "replace saturating activations (sigmoid, tanh...) with ReLU and re-init for it"
    addresses = ("vanishing_gradient", "saturated_activations", "loss_stalled",
                 "input_side_frozen")
    rank = 20
    Options = ReluOptions

    def applies(self, experiment: Experiment, options: ReluOptions) -> str | None:
        hidden, output = saturating_activations(inspect_model(experiment), experiment.input_shape)
        if hidden:
            return None
        if output:
            return f"the only saturating activations follow the output layer ({', '.join(output)})"
        calls = functional_kinds(inspect_model(experiment), experiment.input_shape)
        if calls is None:  # no input shape, or the dry forward failed: cannot look inside
            return ("no saturating activation modules found (functional calls such as "
                    "torch.sigmoid cannot be replaced)")
        if calls[1] or calls[2]:
            return ("its saturating activations are function calls in forward "
                    "(torch.sigmoid, torch.tanh), which cannot be replaced: use modules "
                    "(nn.Sigmoid) or change forward")
        return "the model has no saturating activation (sigmoid, tanh...) to replace"

    def in_place(self, records: Sequence[StepRecord], layers: Sequence[LayerInfo]) -> bool:
        # Every activation measured is ReLU-like (a dead-unit count, no saturated one).
        stats = [s for r in records for s in r.layers.values()]
        return any(math.isfinite(s.act_dead) for s in stats) and not any(
            math.isfinite(s.act_saturated) for s in stats)

    def transform(self, experiment: Experiment, options: ReluOptions) -> Experiment:
        model = inspect_model(experiment)
        hidden, _ = saturating_activations(model, experiment.input_shape)
        kinds = Counter(type(model.get_submodule(name)).__name__ for name in hidden)
        reinit = [] if options.init == "keep" else [
            name for name in feeding_layers(model, experiment.input_shape, hidden)
            if trains(model.get_submodule(name))]
        note = {"to": options.to, "replaced": hidden, "kinds": dict(kinds),
                "init": options.init, "reinitialised": reinit}
        transform = partial(replace_saturating, input_shape=experiment.input_shape,
                            to=options.to, init=options.init)
        return self.with_model_transform(experiment, transform, note)
