"""What the probe calls a layer, and where each layer sits between input and loss.

A layer is a module that owns parameters directly; a recurrent module is one layer
per stacked layer and direction (its parameters are grouped by their `_l{k}` and
`_reverse` suffixes). Depth comes from the backward graph of a sampled step: the
order in which parameter gradients become ready runs from the loss to the input,
whatever the forward hooks saw, so functionally called submodules (an attention's
`out_proj`), parameters a parent uses itself (a class token) and shared or tied
parameters are placed where they act. A parameter used in several places is
accumulated once, after its last use in backward, which is its use nearest the input:
that is where it sits. Layers that get no gradient (frozen, or not feeding the loss)
are placed by forward execution order among the others.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from vgdiag.engine.records import LayerInfo

# Every activation class torch.nn defines (subclasses are recognised by isinstance).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = tuple(
    c for c in vars(nn.modules.activation).values()
    if isinstance(c, type) and issubclass(c, nn.Module)
    and c.__module__ == nn.modules.activation.__name__ and c is not nn.MultiheadAttention
)
SATURATING_01 = (nn.Sigmoid, nn.Hardsigmoid)
SATURATING_11 = (nn.Tanh, nn.Hardtanh, nn.Softsign)
# Whose gradient is exactly zero wherever the output is <= 0, so a unit that is <= 0
# for a whole batch passes nothing back (ELU, GELU, SiLU, LeakyReLU... do).
DEAD_BELOW_ZERO = (nn.ReLU, nn.ReLU6)
_NORM_TYPES = tuple(
    t for t in (getattr(nn.modules.batchnorm, "_NormBase", None), nn.LayerNorm, nn.GroupNorm,
                nn.LocalResponseNorm, getattr(nn, "RMSNorm", None))
    if t is not None
)
_EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)
# Outputs laid out (batch, channel, *positions): a unit is a channel.
_CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm,
                  nn.modules.instancenorm._InstanceNorm, nn.GroupNorm)
# Name parts that wrappers insert between the user's modules (torch.compile, FSDP,
# activation checkpointing); dropped so layers keep the names the user gave them.
# Wrappers whose part of a name is not the user's: torch.compile's, FSDP1's, activation
# checkpointing's, and layer-wise training's frozen layers (plugins/layerwise.Frozen).
_WRAPPER_PARTS = ("_orig_mod", "_fsdp_wrapped_module", "_checkpoint_wrapped_module",
                  "_frozen_module")
_RNN_SUFFIX = re.compile(r"_l(\d+)(_reverse)?$")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP/DataParallel and torch.compile wrappers."""
    for _ in range(8):  # wrappers nest (compile(DDP(model))); a bound, not a loop forever
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def _wrapping(model: nn.Module) -> Iterator[nn.Module]:
    """`model` and the modules it wraps (torch.compile's `_orig_mod`, DDP's `module`)."""
    for _ in range(8):
        yield model
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return
        model = inner


def compiled(model: nn.Module) -> bool:
    """True for a torch.compile wrapper at any depth of wrapping, or a module compiled
    in place (`module.compile()`)."""
    return any(hasattr(m, "_orig_mod") or getattr(m, "_compiled_call_impl", None)
               for m in _wrapping(model))


def compiled_anywhere(model: nn.Module) -> bool:
    """True where the model or any module inside it is compiled."""
    return compiled(model) or any(compiled(m) for m in unwrap(model).modules())


def compiled_fullgraph(model: nn.Module) -> bool:
    """True for torch.compile(model, fullgraph=True) (at any depth of wrapping)."""
    return any(getattr(getattr(m, "dynamo_ctx", None), "fullgraph", False)
               for m in _wrapping(model))


def clean_name(name: str) -> str:
    parts = [p for p in name.split(".") if p not in _WRAPPER_PARTS]
    return ".".join(parts) or "<root>"


def role_of(module: nn.Module) -> str:
    """'embedding', 'norm', 'recurrent' or '' (the layer kinds findings treat apart)."""
    if isinstance(module, _EMBEDDING_TYPES):
        return "embedding"
    if isinstance(module, _NORM_TYPES) or "Norm" in kind_name(module):
        return "norm"  # library norms (RMSNorm, T5LayerNorm) by name
    if isinstance(module, nn.RNNBase):
        return "recurrent"
    return ""


def channel_first(module: nn.Module) -> bool:
    return isinstance(module, _CHANNEL_FIRST)


def has_lazy_parameters(model: nn.Module) -> bool:
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


Owners = list[tuple[str, nn.Module]]
Params = list[tuple[int, str, nn.Parameter]]


def find_layers(model: nn.Module) -> tuple[Owners, Params]:
    """Layers (qualified name, module) and parameters (layer index, name, tensor)."""
    owners: Owners = []
    params: Params = []
    seen: set[int] = set()  # a tied parameter belongs to the first module that owns it
    for name, module in model.named_modules():  # shared modules are listed once
        own = [(pn, p) for pn, p in module.named_parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {}
        for pn, p in own:
            match = _RNN_SUFFIX.search(pn) if isinstance(module, nn.RNNBase) else None
            suffix = f"l{match.group(1)}{match.group(2) or ''}" if match else ""
            groups.setdefault(suffix, []).append((pn, p))
        for suffix, members in groups.items():
            index = len(owners)
            owners.append((f"{name}.{suffix}" if suffix and name else suffix or name, module))
            for pn, p in members:
                seen.add(id(p))
                params.append((index, pn, p))
    if not owners:
        raise ValueError("the model has no parameters: there is nothing to diagnose")
    if any(type(p).__name__ == "FlatParameter" for _, _, p in params):
        warnings.warn(
            "vgdiag: FSDP with use_orig_params=False flattens each FSDP unit into one "
            "parameter, so statistics are per unit, not per layer: wrap with "
            "use_orig_params=True or use FSDP2 (fully_shard) to see every layer",
            stacklevel=4,
        )
    return owners, params


def tied_modules(model: nn.Module, owners: Owners,
                 params: Params) -> list[tuple[str, nn.Module, int]]:
    """Modules that own no layer but apply an earlier layer's parameters: (name,
    module, layer).

    A language model's head tied to its embedding is one (`lm_head` applies
    `wte.weight`): find_layers counts the weight once, at the embedding. The layer is
    that of the module's weight (else of its first parameter).
    """
    owner = {id(p): i for i, _, p in params}
    layer_of = {id(m): i for i, (_, m) in enumerate(owners)}
    found = []
    for name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own or any(id(p) not in owner for p in own.values()):
            continue
        if id(module) in layer_of:
            # A layer of its own by its other parameters (a decoder's bias, as in
            # PyTorch's word_language_model) applying another layer's weight: tied too.
            weight = own.get("weight")
            if weight is None or owner[id(weight)] == layer_of[id(module)]:
                continue
            found.append((name, module, owner[id(weight)]))
            continue
        if any(id(m) in layer_of for m in module.modules() if m is not module):
            continue  # a container: its forward ends after its own layers, whatever it applies
        found.append((name, module, owner[id(own.get("weight", next(iter(own.values()))))]))
    return found


def depth_order(forward: list[int], backward: list[int], count: int) -> list[int]:
    """Layer indices from input to loss.

    `backward` (input-side first) orders the layers that received a gradient; a
    layer only seen in `forward` goes just before the next gradient layer that ran
    after it; layers seen in neither come last, in definition order.
    """
    if not backward:
        seen = set(forward)
        return forward + [i for i in range(count) if i not in seen]
    in_backward = set(backward)
    before: dict[int | None, list[int]] = {}
    pending: list[int] = []
    for i in forward:
        if i in in_backward:
            before.setdefault(i, []).extend(pending)
            pending = []
        else:
            pending.append(i)
    before.setdefault(None, []).extend(pending)
    order: list[int] = []
    for i in backward:
        order += before.get(i, [])
        order.append(i)
    order += before[None]
    placed = set(order)
    return order + [i for i in range(count) if i not in placed]


def normalized_after(order: list[int], roles: list[str]) -> set[int]:
    """Layers (in depth order) that a normalisation layer follows, resetting their scale."""
    last_norm = max((k for k, i in enumerate(order) if roles[i] == "norm"), default=-1)
    return {i for k, i in enumerate(order) if k < last_norm and roles[i] != "norm"}


def fan_in(shape: tuple[int, ...], pname: str, in_features: int | None) -> int:
    """Inputs per output unit, read from how the layer uses its weight.

    (out, in, *kernel) for Linear and convolutions; a weight stored (in, out), as
    GPT-2's Conv1D does, is recognised by the width of the input it was applied to.
    """
    if not pname.startswith("weight") or len(shape) < 2:
        return 0
    if len(shape) == 2 and in_features is not None and in_features == shape[0] != shape[1]:
        return shape[0]
    return math.prod(shape[1:])


def kind_name(module: nn.Module) -> str:
    """The layer's class name as a user knows it: PyTorch's private subclasses (attention's
    NonDynamicallyQuantizableLinear) are shown as the public torch.nn class they extend,
    a TorchScript module as the class it was scripted from."""
    if isinstance(module, torch.jit.ScriptModule):
        return str(getattr(module, "original_name", "") or type(module).__name__)
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.") and not hasattr(nn, cls.__name__):
            continue
        return cls.__name__
    return type(module).__name__


def layer_info(
    name: str,
    module: nn.Module,
    depth: int,
    params: list[tuple[str, nn.Parameter, tuple[int, ...]]],
    *,
    activation: str | None,
    in_features: int | None,
    used: bool,
    normalized: bool,
    tied: tuple[str, ...] = (),
) -> LayerInfo:
    """The LayerInfo of one layer from its own parameters (name, tensor, full shape)."""
    weight = next((q for q in params if q[0] == "weight" or q[0].startswith("weight_ih")),
                  params[0])
    return LayerInfo(
        name=clean_name(name),
        kind=kind_name(module),
        depth=depth,
        num_params=int(sum(math.prod(s) for _, _, s in params)),
        param_names=tuple(pn for pn, _, _ in params),
        activation=clean_name(activation) if activation is not None else None,
        fan_in=fan_in(weight[2], weight[0], in_features),
        trainable=any(p.requires_grad for _, p, _ in params),
        used=used,
        role=role_of(module),
        normalized_after=normalized,
        tied=tied,
    )
