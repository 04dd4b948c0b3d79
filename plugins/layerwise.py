"""layerwise: build the deep network in stages, training a few layers at a time.

Schedule for hidden-layer groups G1..Gn (default 2,2,2,1 for 7 hidden layers):

    stage 1        train G1 + a fresh output head
    then for each next group Gk (k = 2..n):
      stage 2k-2   freeze G1..G(k-1), add Gk + a fresh head, train Gk and the head
      stage 2k-1   unfreeze everything, fine-tune G1..Gk + the head

At the last group the head is the model's real output layer and the fine-tune stage
trains the full model itself, so 2n-1 stages in all (7 for 2,2,2,1). Frozen layers
run under torch.no_grad(): they get no gradient, so no optimizer can move them.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from vgdiag.engine.experiment import Experiment, Stage
from vgdiag.engine.models import init_weights
from vgdiag.errors import UserError
from vgdiag.plugin_api import Plugin, inspect_model, option
from vgdiag.surgery import LAYER_TYPES, TraceError, device_and_dtype, sequential_units, trace
from vgdiag_plugins.weight_init import dominant_activation


class Frozen(nn.Module):
    """Runs one layer without recording gradients: its parameters stay as they are.

    BatchNorm running statistics inside still update in train mode (they are buffers,
    not parameters), as when freezing with requires_grad=False. The layer is held as
    `_frozen_module`, a part the probe leaves out of names (probe_layers.clean_name):
    a frozen layer keeps the full model's name in every stage's records.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._frozen_module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._frozen_module(x)


def head_name(model: nn.Module) -> str:
    """The name of a stage's fresh output head: "head", unless a child has it."""
    taken = set(model._modules)
    return next(n for n in ("head", *(f"head_{k}" for k in range(1, len(taken) + 2)))
                if n not in taken)


def last_layer(module: nn.Module) -> str | None:
    """The name of `module`'s last Linear/Conv in registration order (a Sequential's
    output layer), None if it has none."""
    names = [n for n, m in module.named_modules() if isinstance(m, LAYER_TYPES)]
    return names[-1] if names else None


@dataclass
class Stack:
    """An nn.Sequential seen as prefix -> hidden layers -> output layer."""

    prefix: list[nn.Module]  # children before the first layer (e.g. Flatten)
    hidden: list[list[nn.Module]]  # one list of children per hidden layer (Linear + act...)
    output: list[nn.Module]  # the output layer and whatever follows it (e.g. LogSoftmax)
    hidden_shapes: list[tuple[int, ...]]  # each hidden layer's output shape, batch first
    classes: int  # the model's output features


def analyse(model: nn.Module, input_shape: tuple[int, ...] | None) -> Stack | str:
    """The model as a Stack, or the reason it is not one."""
    if not isinstance(model, nn.Sequential):
        inner = [n for n, c in model.named_children() if isinstance(c, nn.Sequential)]
        hint = (f" (if its forward() only runs its Sequential `{inner[0]}`, pass that: a "
                f"factory function returning model.{inner[0]})" if len(inner) == 1 else "")
        return (
            "layer-wise training needs an nn.Sequential stack of hidden blocks; "
            f"this model is a {type(model).__name__} with its own forward(){hint}"
        )
    prefix, units = sequential_units(model)
    if len(units) < 3:
        return (
            f"the Sequential has {max(len(units) - 1, 0)} hidden block(s) before its output "
            "layer; layer-wise training needs at least 2"
        )
    if input_shape is None:
        return "needs the input shape (one sample's shape) for a dry forward"
    try:
        calls = {id(call.module): call for call in trace(model, input_shape)}
    except TraceError as exc:
        return str(exc)
    out_shape = calls[id(model)].out_shape
    if out_shape is None or len(out_shape) != 2:
        return f"the model's output has shape {out_shape}, not (batch, classes)"
    children = list(model)
    shapes = []
    for unit in units[:-1]:
        call = calls.get(id(children[unit[-1]]))
        if call is None or call.out_shape is None:
            return f"hidden block ending at child {unit[-1]} did not run in a dry forward"
        shapes.append(call.out_shape)
    return Stack(
        prefix=[children[i] for i in prefix],
        hidden=[[children[i] for i in unit] for unit in units[:-1]],
        output=[children[i] for i in units[-1]],
        hidden_shapes=shapes,
        classes=out_shape[1],
    )


def default_blocks(depth: int) -> list[int]:
    """Groups of 2 hidden layers, a last group of 1 for odd depths (7 -> 2,2,2,1)."""
    if depth <= 2:
        return [1] * depth
    return [2] * (depth // 2) + [1] * (depth % 2)


def split_epochs(total: int, stages: int) -> list[int]:
    """`total` epochs over `stages`, at least 1 each; the extra ones go to the last stages."""
    base, extra = divmod(total, stages)
    if base == 0:
        return [1] * stages
    return [base] * (stages - extra) + [base + 1] * extra


def _layers(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}-{last}"


def _head(
    shape: tuple[int, ...], classes: int, tail: list[nn.Module], like: nn.Module
) -> nn.Module:
    """A fresh output head for a hidden layer's output: (Flatten,) Linear, then `tail`."""
    device, dtype = device_and_dtype(like)
    linear = nn.Linear(math.prod(shape[1:]), classes, device=device, dtype=dtype)
    parts: list[nn.Module] = [nn.Flatten(), linear] if len(shape) > 2 else [linear]
    return nn.Sequential(*parts, *tail)


def _params(modules: list[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


def build_stages(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    blocks: tuple[int, ...],
    epochs: tuple[int, ...],
    batch_size: int | None,
    init: str = "keep",
) -> list[Stage]:
    """The stage list for `model` (the experiment's StagePlan; see the module docstring).

    Stage models share every layer with `model`; the last stage's model is `model`.
    `init` "xavier" re-initialises every layer and head first (see LayerwiseOptions).
    """
    stack = analyse(model, input_shape)
    if isinstance(stack, str):
        raise UserError(f"layerwise cannot stage this model: {stack}")
    if sum(blocks) != len(stack.hidden):
        raise UserError(
            f"layerwise.blocks adds up to {sum(blocks)} but the model has "
            f"{len(stack.hidden)} hidden layers"
        )
    ends = [sum(blocks[: g + 1]) for g in range(len(blocks))]
    tail = stack.output[1:]
    # Children by position, under the names the full model gives them (a module used
    # twice, one shared activation, keeps both places): a stage's layers are recorded
    # under the full model's names.
    assert isinstance(model, nn.Sequential)  # analyse() said it is
    prefix, units = sequential_units(model)
    keys, children = list(model._modules), list(model)
    head = head_name(model)

    def named(indices: list[int], frozen: bool = False) -> list[tuple[str, nn.Module]]:
        return [(keys[i], Frozen(children[i]) if frozen else children[i]) for i in indices]

    def upto(end: int, start: int = 0) -> list[int]:
        return [i for unit in units[start:end] for i in unit]

    def modules(indices: list[int]) -> list[nn.Module]:
        return [children[i] for i in indices]

    heads = [_head(stack.hidden_shapes[end - 1], stack.classes, tail, model) for end in ends[:-1]]
    if init == "xavier":
        gain_from = dominant_activation(model) or "linear"
        for module in (model, *heads):  # the logits get gain 1 (init_weights' output)
            init_weights(module, "xavier", gain_from, output=last_layer(module))
    last = len(blocks) - 1

    def stage(*parts: list[tuple[str, nn.Module]]) -> nn.Sequential:
        return nn.Sequential(OrderedDict(item for part in parts for item in part))

    plan: list[tuple[str, nn.Module, list[nn.Parameter] | None]] = []
    if last == 0:  # one group: ordinary training of the whole model
        plan.append((f"train all {ends[0]} layers + output layer", model, None))
    else:
        first = stage(named(prefix + upto(ends[0])), [(head, heads[0])])
        plan.append((f"train {_layers(1, ends[0])} + head", first, None))
    for g in range(1, len(blocks)):
        lo, hi = ends[g - 1], ends[g]
        new = upto(hi, lo)
        top = [(head, heads[g])] if g < last else named(units[-1])
        grow = stage(named(prefix + upto(lo), frozen=True), named(new), top)
        what = "head" if g < last else "output layer"
        name = f"train {_layers(lo + 1, hi)} + {what}, {_layers(1, lo)} frozen"
        plan.append((name, grow, _params(modules(new) + [m for _, m in top])))
        if g < last:
            tune = stage(named(prefix + upto(hi)), [(head, heads[g])])
            plan.append((f"fine-tune {_layers(1, hi)} + head", tune, None))
        else:
            plan.append((f"fine-tune all {hi} layers + output layer", model, None))
    if len(epochs) != len(plan):
        raise UserError(f"layerwise has {len(plan)} stages but {len(epochs)} epoch counts")
    return [
        Stage(
            name=f"{i + 1}/{len(plan)} {name}",
            epochs=n,
            model=m,
            trainable=trainable,
            batch_size=batch_size,
        )
        for i, ((name, m, trainable), n) in enumerate(zip(plan, epochs, strict=True))
    ]


@dataclass(frozen=True)
class LayerwiseOptions:
    blocks: tuple[int, ...] | None = option(
        None, "hidden layers per group, e.g. 2,2,2,1 (default: groups of 2, a last "
        "group of 1 for odd depths; that is 2,2,2,1 for 7 hidden layers)")
    epochs: tuple[int, ...] | None = option(
        None, "epochs per stage: one number for every stage, or one per stage "
        "(default: the experiment's epochs split evenly, extra ones to the last stages, "
        "at least 1 each)")
    batch_size: int | None = option(
        None, "batch size of every stage (default: the reference's ratio, 1/8 of the "
        "experiment's batch size (512 -> 64), at least 8 and at most the experiment's)")
    init: str = option(
        "xavier", "xavier | keep: each stage trains its new layers and head from scratch, "
        "so they start from Xavier init for their activation, zero bias (default xavier; "
        "keep leaves the model's own init)", choices=("xavier", "keep"))


class Layerwise(Plugin):
    name = "layerwise"
    summary = "train in stages: a few layers at a time with a fresh head, freeze, grow, fine-tune"
    addresses = ("vanishing_gradient", "input_side_frozen", "loss_stalled")
    rank = 60
    Options = LayerwiseOptions
    # Batch 1/8 of the experiment's: 8x the optimizer steps over the same samples, on
    # shallower stage nets: 145 s against the baseline's 86 s in the reference preset.
    relative_cost = 1.7

    def _resolve(
        self, experiment: Experiment, options: LayerwiseOptions, depth: int
    ) -> tuple[list[int], list[int], int]:
        blocks = list(options.blocks or default_blocks(depth))
        if sum(blocks) != depth:
            raise UserError(
                f"layerwise.blocks={','.join(map(str, blocks))} adds up to {sum(blocks)} "
                f"but the model has {depth} hidden layers"
            )
        stages = 2 * len(blocks) - 1
        given = options.epochs
        if given is None:
            epochs = split_epochs(experiment.train.epochs, stages)
        elif len(given) == 1:
            epochs = list(given) * stages
        elif len(given) == stages:
            epochs = list(given)
        else:
            raise UserError(
                f"layerwise.epochs gives {len(given)} numbers for {stages} stages: "
                "give one number, or one per stage"
            )
        batch = experiment.train.batch_size
        # Each stage is a shallow net learning from scratch: the reference gave it 8x the
        # optimizer steps per epoch (batch 64 against 512). Keep that ratio by default.
        default = min(batch, max(8, batch // 8))
        return blocks, epochs, options.batch_size or default

    def applies(self, experiment: Experiment, options: LayerwiseOptions) -> str | None:
        if experiment.stage_plan is not None:
            return "the experiment already has a staged schedule"
        stack = analyse(inspect_model(experiment), experiment.input_shape)
        if isinstance(stack, str):
            return stack
        self._resolve(experiment, options, len(stack.hidden))
        return None

    def transform(self, experiment: Experiment, options: LayerwiseOptions) -> Experiment:
        assert experiment.input_shape is not None  # applies() checked it
        stack = analyse(inspect_model(experiment), experiment.input_shape)
        assert not isinstance(stack, str)
        blocks, epochs, batch_size = self._resolve(experiment, options, len(stack.hidden))
        note = {"blocks": blocks, "epochs": epochs, "batch_size": batch_size,
                "init": options.init}
        plan = partial(
            build_stages,
            input_shape=experiment.input_shape,
            blocks=tuple(blocks),
            epochs=tuple(epochs),
            batch_size=batch_size,
            init=options.init,
        )
        return self.record(experiment, note, stage_plan=plan)
