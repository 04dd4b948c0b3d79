"""skip: residual connections (x + block(x)) around runs of shape-preserving layers.

The identity path carries the gradient from later layers straight to earlier ones,
past every saturating activation in between (He et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from vgdiag.engine.experiment import Experiment
from vgdiag.errors import UserError
from vgdiag.plugin_api import Plugin, inspect_model, option
from vgdiag.surgery import ModuleCall, TraceError, sequential_units, set_children, trace


class Residual(nn.Module):
    """body(x) + x: an identity shortcut around `body`, whose output has x's shape."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + x


@dataclass
class Block:
    """Units first..last (0-based, inclusive) of one Sequential become one Residual."""

    first: int
    last: int

    def label(self) -> str:
        # Hidden layer k's output is h_k, so a block over layers i..j adds h_j + h_(i-1).
        return f"h{self.last + 1}+h{self.first}"


@dataclass
class ContainerPlan:
    name: str  # qualified name of the Sequential ("" for the root)
    seq: nn.Sequential
    units: list[list[int]]  # child indices per unit (see surgery.sequential_units)
    blocks: list[Block]


def _unit_preserves_shape(
    seq: nn.Sequential, unit: list[int], calls: dict[int, ModuleCall]
) -> bool:
    first, last = calls.get(id(seq[unit[0]])), calls.get(id(seq[unit[-1]]))
    if first is None or last is None or first.calls != 1 or last.calls != 1:
        return False  # did not run, or ran more than once: shapes are not one thing
    return first.in_shape is not None and first.in_shape == last.out_shape


def _blocks_from_span(preserving: list[bool], span: int) -> list[Block]:
    blocks: list[Block] = []
    i = 0
    while i < len(preserving):
        if not preserving[i]:
            i += 1
            continue
        end = i
        while end + 1 < len(preserving) and preserving[end + 1] and end + 1 - i < span:
            end += 1
        blocks.append(Block(i, end))
        i = end + 1
    return blocks


def _visit(
    module: nn.Module,
    name: str,
    calls: dict[int, ModuleCall],
    span: int,
    plans: list[ContainerPlan],
) -> None:
    wrapped: set[int] = set()
    if isinstance(module, nn.Sequential):
        _, units = sequential_units(module)
        preserving = [_unit_preserves_shape(module, unit, calls) for unit in units]
        blocks = _blocks_from_span(preserving, span)
        if blocks:
            plans.append(ContainerPlan(name, module, units, blocks))
        for block in blocks:
            for unit in units[block.first : block.last + 1]:
                wrapped.update(unit)
    for i, (child_name, child) in enumerate(module.named_children()):
        if i not in wrapped:
            _visit(child, f"{name}.{child_name}" if name else child_name, calls, span, plans)


def _main_stack(model: nn.Module) -> tuple[str, nn.Sequential, list[list[int]]] | None:
    best: tuple[str, nn.Sequential, list[list[int]]] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            _, units = sequential_units(module)
            if best is None or len(units) > len(best[2]):
                best = (name, module, units)
    return best


def plan_skips(
    model: nn.Module,
    input_shape: tuple[int, ...],
    span: int = 2,
    blocks: list[tuple[int, int]] | None = None,
) -> list[ContainerPlan]:
    """Which runs of units get a residual path.

    Args:
        span: units (hidden layers) per residual block; runs of shape-preserving units
            in every nn.Sequential (recursively, outermost first) are cut into blocks
            of `span`, a shorter remainder becoming a block of its own.
        blocks: explicit 1-based inclusive ranges of units of the main stack (the
            Sequential with the most units), e.g. [(2, 3), (5, 7)]; overrides span.

    Raises:
        UserError: an explicit block does not keep its input shape or is out of range.
        TraceError: the dry forward failed.
    """
    calls = {id(call.module): call for call in trace(model, input_shape)}
    if blocks is None:
        plans: list[ContainerPlan] = []
        _visit(model, "", calls, span, plans)
        return plans
    stack = _main_stack(model)
    if stack is None:
        raise UserError("skip.blocks needs an nn.Sequential stack of layers in the model")
    name, seq, units = stack
    chosen: list[Block] = []
    for first, last in sorted(blocks):
        if not 1 <= first <= last <= len(units):
            raise UserError(f"skip.blocks range {first}-{last} is outside layers 1-{len(units)}")
        if chosen and first - 1 <= chosen[-1].last:
            raise UserError(f"skip.blocks ranges overlap at layer {first}")
        start = calls.get(id(seq[units[first - 1][0]]))
        end = calls.get(id(seq[units[last - 1][-1]]))
        if (
            start is None
            or end is None
            or start.in_shape in (None, ())
            or (start.in_shape != end.out_shape)
        ):
            raise UserError(
                f"skip.blocks range {first}-{last} changes the shape "
                f"({None if start is None else start.in_shape} -> "
                f"{None if end is None else end.out_shape}); a skip needs equal shapes"
            )
        chosen.append(Block(first - 1, last - 1))
    return [ContainerPlan(name, seq, units, chosen)]


def add_skips(
    model: nn.Module,
    input_shape: tuple[int, ...],
    span: int = 2,
    blocks: list[tuple[int, int]] | None = None,
) -> nn.Module:
    """Wrap the planned runs of units in Residual modules, in place."""
    for plan in plan_skips(model, input_shape, span, blocks):
        children = list(plan.seq)
        in_block = {}
        for block in plan.blocks:
            members = [i for unit in plan.units[block.first : block.last + 1] for i in unit]
            in_block[members[0]] = members
        new_children: list[nn.Module] = []
        skip_until = -1
        for i, child in enumerate(children):
            if i <= skip_until:
                continue
            if i in in_block:
                members = in_block[i]
                new_children.append(Residual(nn.Sequential(*(children[j] for j in members))))
                skip_until = members[-1]
            else:
                new_children.append(child)
        set_children(plan.seq, new_children)
    return model


def parse_blocks(text: str) -> tuple[tuple[int, int], ...]:
    """'2-3,5-7' -> ((2, 3), (5, 7)): 1-based inclusive ranges of layers."""
    ranges: list[tuple[int, int]] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            lo, hi = int(first), int(last if dash else first)
        except ValueError:
            lo, hi = 0, 0
        if lo < 1 or hi < lo:
            raise ValueError("give ranges such as 2-3,5-7")
        ranges.append((lo, hi))
    return tuple(ranges)


DEFAULT_SPAN = 2


@dataclass(frozen=True)
class SkipOptions:
    span: int | None = option(None, f"hidden layers per residual block (default {DEFAULT_SPAN})")
    blocks: tuple[tuple[int, int], ...] | None = option(
        None, "explicit 1-based ranges of the main stack's layers, e.g. 2-3,5-7 "
        "(the reference layout h3+h1, h7+h4); replaces span", parse=parse_blocks)

    def __post_init__(self) -> None:
        if self.span is not None and self.blocks is not None:
            raise ValueError("give either skip.span or skip.blocks, not both")

    def plan(self) -> tuple[int, list[tuple[int, int]] | None]:
        return self.span or DEFAULT_SPAN, list(self.blocks) if self.blocks else None


class Skip(Plugin):
    name = "skip"
    summary = "add residual (identity) connections around blocks of shape-preserving layers"
    addresses = ("vanishing_gradient", "input_side_frozen", "loss_stalled")
    rank = 50
    Options = SkipOptions

    def applies(self, experiment: Experiment, options: SkipOptions) -> str | None:
        span, blocks = options.plan()
        if experiment.input_shape is None:
            return "needs the input shape (one sample's shape) for a dry forward"
        model = inspect_model(experiment)
        if not any(isinstance(m, nn.Sequential) for m in model.modules()):
            return "no nn.Sequential container to add residual blocks to"
        try:
            plans = plan_skips(model, experiment.input_shape, span, blocks)
        except TraceError as exc:
            return str(exc)
        if not any(plan.blocks for plan in plans):
            return "no run of layers keeps its input shape (a skip needs equal shapes)"
        return None

    def transform(self, experiment: Experiment, options: SkipOptions) -> Experiment:
        assert experiment.input_shape is not None  # applies() checked it
        span, blocks = options.plan()
        plans = plan_skips(inspect_model(experiment), experiment.input_shape, span, blocks)
        skips = [
            f"{plan.name}: {block.label()}" if plan.name else block.label()
            for plan in plans
            for block in plan.blocks
        ]
        note = {"span": None if blocks else span, "skips": skips}
        transform = partial(add_skips, input_shape=experiment.input_shape, span=span, blocks=blocks)
        return self.with_model_transform(experiment, transform, note)
