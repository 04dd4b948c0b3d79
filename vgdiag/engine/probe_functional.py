"""Activations called as functions: `F.relu(x)`, `torch.tanh(x)`, `x.sigmoid()`.

Many models apply their nonlinearity in `forward` instead of as a module (PyTorch's
own tutorials do; so do Hugging Face's activation classes, which wrap `F.gelu`), and
a forward hook cannot see those. On a sampled step's forward pass the probe enters a
TorchFunctionMode that sees every torch function the model calls; an activation
function whose input *is* a layer's output (the same tensor object: `F.relu(self.fc(x))`,
`torch.tanh(self.bn(h))`) is that layer's activation, measured as a module's would be.
Gates and other uses on derived tensors (`torch.sigmoid(a + b)`) are not matched.

A mode puts every torch call of the forward pass through Python, so it only stays on
for models that need it: it runs on the first sampled steps and is kept only if it
found a layer whose activation no module hook had measured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# function -> (kind, dead): kind 1 saturates in (0, 1), 2 in (-1, 1), 0 neither;
# dead: zero gradient at <= 0. The same classes as probe_activations.activation_kind.
KINDS: dict[Callable[..., Any], tuple[int, bool]] = {}


def _add(kind: int, dead: bool, *funcs: Callable[..., Any]) -> None:
    for f in funcs:
        KINDS[f] = (kind, dead)


_add(1, False, torch.sigmoid, torch.Tensor.sigmoid, torch.sigmoid_, torch.Tensor.sigmoid_,
     F.sigmoid, torch.special.expit, F.hardsigmoid)
_add(2, False, torch.tanh, torch.Tensor.tanh, torch.tanh_, torch.Tensor.tanh_, F.tanh,
     F.softsign, F.hardtanh)
_add(0, True, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu,
     F.relu_, F.relu6)
_add(0, False, F.gelu, F.silu, F.elu, F.selu, F.celu, F.leaky_relu, F.mish, F.softplus,
     F.hardswish)

Found = Callable[[torch.Tensor, torch.Tensor, int, bool, str], None]


def kind_of(func: Callable[..., Any], args: tuple[Any, ...],
            kwargs: dict[str, Any]) -> tuple[int, bool] | None:
    try:
        spec = KINDS.get(func)
    except TypeError:  # an unhashable callable: not one of ours
        return None
    if spec is not None and func is F.hardtanh:  # saturates in (-1, 1) only by default
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        if (low, high) != (-1.0, 1.0):
            return 0, False
    return spec


class FunctionalActivations(TorchFunctionMode):
    """Calls `found(input, output, kind, dead, name)` for each activation function
    the forward pass calls on a tensor; everything else passes straight through.
    Once closed it passes everything through, wherever it still is."""

    def __init__(self, found: Found) -> None:
        super().__init__()
        self._found: Found | None = found

    def close(self) -> None:
        """Leave the mode, wherever it is on the stack: a user's mode (or another
        probe's) entered after this one stays where it was, above the modes below."""
        self._found = None
        n = torch._C._len_torch_function_stack()
        at = next((i for i in range(n) if torch._C._get_function_stack_at(i) is self), None)
        if at is None:
            return
        above = [torch._C._pop_torch_function_stack() for _ in range(n - 1 - at)]
        torch._C._pop_torch_function_stack()  # this one
        for mode in reversed(above):
            torch._C._push_on_torch_function_stack(mode)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)  # the mode is off inside its own handler
        found = self._found
        # Inside a compiled function the probe sees nothing: tracing through this
        # handler would break the user's graph (fullgraph=True would raise).
        if (found is not None and not torch.compiler.is_compiling() and args
                and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor)):
            spec = kind_of(func, args, kwargs)
            if spec is not None:
                name = getattr(func, "__name__", "activation").rstrip("_")
                found(args[0], out, spec[0], spec[1], f"{name}()")
        return out
