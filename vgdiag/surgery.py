"""Module-tree surgery: find, trace and replace submodules of any nn.Module.

Plugins change models they did not write, so nothing here assumes a particular
architecture. Modules are addressed by qualified name ("features.3") and replaced
through their parent, which works for nn.Sequential, nn.ModuleList, nn.ModuleDict
and plain attributes alike. Execution order and tensor shapes come from one dry
forward on zeros (`trace`), because registration order says little about what a
custom forward() actually runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Layers that own a weight matrix/kernel the gradient flows through; the last one
# executed is taken to be the output layer.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Activations whose derivative tends to 0 for large |x|: the cause of vanishing gradients.
SATURATING_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softsign,
    nn.LogSigmoid,
)

RELU_FAMILY: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Hardswish,
)

# Element-wise activations (softmax-like modules normalise across units and are
# output transforms, so they are deliberately absent).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    SATURATING_TYPES + RELU_FAMILY + (nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold)
)


def is_saturating(module: nn.Module) -> bool:
    """True for sigmoid/tanh-like activation modules.

    ReLU6 subclasses Hardtanh in PyTorch but behaves like a ReLU, so it is excluded.
    """
    return isinstance(module, SATURATING_TYPES) and not isinstance(module, nn.ReLU6)


def is_activation(module: nn.Module) -> bool:
    return isinstance(module, ACTIVATION_TYPES)


def is_layer(module: nn.Module) -> bool:
    return isinstance(module, LAYER_TYPES)


def contains_layer(module: nn.Module) -> bool:
    """True if `module` is or contains a Linear/Conv layer."""
    return any(is_layer(m) for m in module.modules())


def find_modules(
    root: nn.Module, types: type[nn.Module] | tuple[type[nn.Module], ...]
) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every submodule of the given types, registration order."""
    return [(name, m) for name, m in root.named_modules() if isinstance(m, types)]


def trains(module: nn.Module) -> bool:
    """Whether any of the module's own parameters trains. A re-initialisation draws
    only those that do: a frozen (pretrained) weight drawn afresh would never train."""
    return any(p.requires_grad for p in module.parameters(recurse=False))


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Replace the submodule called `name` by `new`, through its parent; returns the root.

    The root itself is returned unchanged unless `name` is "" (the root is replaced,
    and `new` is returned), so callers always keep the return value.
    """
    if name == "":
        return new
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    if child not in parent._modules:
        raise KeyError(f"{name!r} is not a direct child of {parent_name or 'the model'}")
    # Module.__setattr__ re-registers the child under the same key, which is how
    # Sequential/ModuleList/ModuleDict store their children too, so order is kept.
    setattr(parent, child, new)
    return root


def wrap_module(root: nn.Module, name: str, *after: nn.Module) -> nn.Module:
    """Replace submodule `name` by nn.Sequential(module, *after) in place; returns the root."""
    module = root.get_submodule(name) if name else root
    return replace_module(root, name, nn.Sequential(module, *after))


def device_and_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the module's first parameter (CPU float32 if none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


class TraceError(Exception):
    """A dry forward failed (wrong input shape, unsupported input type...)."""


@dataclass
class ModuleCall:
    """What one dry forward saw of one module (its first call)."""

    name: str  # qualified name ("" for the root)
    module: nn.Module
    order: int  # position among first calls (0 = called first)
    in_shape: tuple[int, ...] | None  # first tensor argument, batch dimension included
    out_shape: tuple[int, ...] | None  # first tensor of the output
    calls: int = 1  # times it ran during the forward (shared or looped modules run more)
    # positions of every one of its calls among all calls of the forward (0 = first)
    at: list[int] = field(default_factory=list)


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _shape(value: object) -> tuple[int, ...] | None:
    tensor = _first_tensor(value)
    return None if tensor is None else tuple(tensor.shape)


def trace(model: nn.Module, input_shape: tuple[int, ...], batch_size: int = 2) -> list[ModuleCall]:
    """Run one forward on zeros of shape (batch_size, *input_shape) and record every module.

    The forward runs in eval mode under no_grad, so BatchNorm running statistics and
    dropout masks are untouched and no random numbers are drawn; each module's
    training flag is restored and every hook removed afterwards, even on failure.

    Returns:
        The modules that ran, ordered by when they were first called (a container
        comes before its children).

    Raises:
        TraceError: the forward raised (typically a wrong input shape).
    """
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name)
    calls: dict[int, ModuleCall] = {}
    counter = [0]

    def before(module: nn.Module, args: tuple[object, ...]) -> None:
        key = id(module)
        counter[0] += 1
        if key in calls:
            calls[key].calls += 1
            calls[key].at.append(counter[0] - 1)
            return
        calls[key] = ModuleCall(names[key], module, len(calls), _shape(args), None,
                                at=[counter[0] - 1])

    def after(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        call = calls[id(module)]
        if call.out_shape is None:
            call.out_shape = _shape(output)

    modes = {module: module.training for module in model.modules()}
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    device, dtype = device_and_dtype(model)
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((batch_size, *input_shape), device=device, dtype=dtype))
    except Exception as exc:  # the user's forward can raise anything
        shape = (batch_size, *input_shape)
        raise TraceError(
            f"a dry forward on zeros of shape {shape} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return sorted(calls.values(), key=lambda call: call.order)


def execution_order(
    model: nn.Module, input_shape: tuple[int, ...] | None
) -> list[tuple[str, nn.Module]]:
    """(name, module) in order of first execution when a dry forward works.

    Falls back to registration order (named_modules) when there is no input shape or
    the dry forward fails; for an nn.Sequential the two orders agree.
    """
    if input_shape is not None:
        try:
            return [(call.name, call.module) for call in trace(model, input_shape)]
        except TraceError:
            pass
    return list(model.named_modules())


def call_sequence(model: nn.Module, input_shape: tuple[int, ...] | None
                  ) -> list[tuple[str, nn.Module]]:
    """(name, module) for every call of a dry forward, in order: a shared module (one
    `self.act` after each layer) appears once per call. Registration order when there is
    no input shape or the dry forward fails."""
    if input_shape is not None:
        try:
            calls = trace(model, input_shape)
        except TraceError:
            pass
        else:
            every = sorted((k, c.name, c.module) for c in calls for k in c.at)
            return [(name, module) for _, name, module in every]
    return list(model.named_modules())


def functional_kinds(model: nn.Module, input_shape: tuple[int, ...] | None
                     ) -> Counter[int] | None:
    """How often a dry forward calls each kind of activation *function* (`F.relu(x)`,
    `torch.sigmoid(x)`: probe_functional's kinds, 1 sigmoid-like, 2 tanh-like, 0 the
    rest); None without an input shape or when the forward fails."""
    from torch.overrides import TorchFunctionMode

    from vgdiag.engine.probe_functional import kind_of

    if input_shape is None:
        return None
    counts: Counter[int] = Counter()

    class Count(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                               kwargs: dict[str, Any] | None = None) -> Any:
            spec = kind_of(func, args, kwargs or {})
            if spec is not None:
                counts[spec[0]] += 1
            return func(*args, **(kwargs or {}))

    try:
        with Count():
            trace(model, input_shape)
    except TraceError:
        return None
    return counts


def output_layer_index(order: list[tuple[str, nn.Module]]) -> int | None:
    """Index in `order` of the last Linear/Conv layer (the output layer), None if none."""
    for i in range(len(order) - 1, -1, -1):
        if is_layer(order[i][1]):
            return i
    return None


def leaves(order: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Only the modules without children, keeping the order."""
    return [(name, m) for name, m in order if not m._modules]


def sequential_units(seq: nn.Sequential) -> tuple[list[int], list[list[int]]]:
    """Split a Sequential's children into a prefix and "units" (hidden layers).

    A unit starts at each child that is or contains a Linear/Conv layer and takes the
    children after it that contain none (activation, dropout, norm, flatten...). The
    children before the first such child form the prefix (e.g. a Flatten).

    Returns:
        (prefix child indices, list of units as lists of child indices).
    """
    prefix: list[int] = []
    units: list[list[int]] = []
    for i, child in enumerate(seq):
        if contains_layer(child):
            units.append([i])
        elif units:
            units[-1].append(i)
        else:
            prefix.append(i)
    return prefix, units


def set_children(seq: nn.Sequential, children: list[nn.Module]) -> None:
    """Make `children` the Sequential's children, renumbered 0..n-1, keeping the object."""
    seq._modules.clear()
    for i, child in enumerate(children):
        seq.add_module(str(i), child)
