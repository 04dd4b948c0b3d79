"""relu: swap saturating activation modules (sigmoid, tanh...) for non-saturating ones.

The derivative of a sigmoid is at most 1/4 and tends to 0 when it saturates, so each
such layer shrinks the gradient; ReLU's is 1 wherever a unit is active.
"""

from __future__ import annotations

from collections import Counter
from functools import partial

from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.plugin_api import Plugin, inspect_model
from vgdiag.surgery import execution_order, is_saturating, output_layer_index, replace_module

REPLACEMENTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky-relu": nn.LeakyReLU,
    "gelu": nn.GELU,
}


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


def replace_saturating(
    model: nn.Module, input_shape: tuple[int, ...] | None, to: str = "relu"
) -> nn.Module:
    """Replace every hidden saturating activation module of `model` in place."""
    hidden, _ = saturating_activations(model, input_shape)
    for name in hidden:
        model = replace_module(model, name, REPLACEMENTS[to]())
    return model


class Relu(Plugin):
    name = "relu"
    summary = "replace saturating activations (sigmoid, tanh...) with ReLU or another"
    options = {"to": "relu | leaky-relu | gelu: the replacement (default relu)"}

    def why_not(self, experiment: Experiment, options: dict[str, str]) -> str | None:
        self.check_options(options)
        self.choice_option(options, "to", REPLACEMENTS, "relu")
        hidden, output = saturating_activations(inspect_model(experiment), experiment.input_shape)
        if hidden:
            return None
        if output:
            return f"the only saturating activations follow the output layer ({', '.join(output)})"
        return (
            "no saturating activation modules found "
            "(functional calls such as torch.sigmoid cannot be replaced)"
        )

    def transform(self, experiment: Experiment, options: dict[str, str]) -> Experiment:
        to = self.choice_option(options, "to", REPLACEMENTS, "relu") or "relu"
        model = inspect_model(experiment)
        hidden, _ = saturating_activations(model, experiment.input_shape)
        kinds = Counter(type(model.get_submodule(name)).__name__ for name in hidden)
        note = {"to": to, "replaced": hidden, "kinds": dict(kinds)}
        transform = partial(replace_saturating, input_shape=experiment.input_shape, to=to)
        return self.with_model_transform(experiment, transform, note)
