"""--loss and --output-key: the loss a run uses, and which output it reads."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vgdiag.errors import UserError
from vgdiag.experiment import LossFn
from vgdiag.loading import (
    describe_exception,
    resolve_spec,
)


def format_shape(t: torch.Tensor | torch.Size | tuple[int, ...]) -> str:
    """(2, 3) style text of a tensor's or size's shape, for error messages."""
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


# ------------------------------------------------------------------------------ loss


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on raw scores (logits) and class indices or class probabilities."""
    return F.cross_entropy(output, target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error; targets are cast to the output's dtype."""
    return F.mse_loss(output, target.to(output.dtype))


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error; targets are cast to the output's dtype."""
    return F.l1_loss(output, target.to(output.dtype))


def bce_with_logits(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits; 0/1 targets of any dtype."""
    return F.binary_cross_entropy_with_logits(output, target.to(output.dtype))


LOSSES: dict[str, LossFn] = {
    "cross-entropy": cross_entropy,
    "mse": mse,
    "l1": l1,
    "bce-with-logits": bce_with_logits,
}
_LOSS_ALIASES = {
    "ce": "cross-entropy",
    "crossentropy": "cross-entropy",
    "cross_entropy": "cross-entropy",
    "mae": "l1",
    "bce": "bce-with-logits",
}
# Losses that compare output and target element by element.
_ELEMENTWISE = ("mse", "l1", "bce-with-logits")


def resolve_loss(spec: str) -> tuple[LossFn, str]:
    """``--loss`` to a loss function and its name.

    Built-in names: cross-entropy (ce), mse, l1 (mae), bce-with-logits (bce). Otherwise
    ``file.py:name`` or ``package.module:name``: a function of (output, target), or an
    nn.Module loss class (built with no arguments) or instance. Custom losses are named
    ``stem:name`` so they never pass for a built-in one.

    Raises:
        UserError: an unknown name, or a custom loss that cannot take (output, target).
    """
    key = spec.strip().lower()
    key = _LOSS_ALIASES.get(key, key)
    if key in LOSSES:
        return LOSSES[key], key
    if ":" not in spec:
        raise UserError(
            f"unknown --loss {spec!r}: use {', '.join(LOSSES)} or path/to/file.py:function"
        )
    found = resolve_spec(
        spec.strip(),
        option="--loss",
        what="a loss function",
        accept=lambda o: (
            inspect.isfunction(o) or (isinstance(o, type) and issubclass(o, nn.Module))
        ),
    )
    obj = found.obj
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        try:
            obj = obj()
        except Exception as exc:
            raise UserError(
                f"--loss {found.name}() could not be built without arguments: "
                f"{describe_exception(exc)}"
            ) from exc
    if not callable(obj) or isinstance(obj, type):
        raise UserError(f"--loss {found.name} in {found.origin} is not a function")
    with contextlib.suppress(TypeError, ValueError):  # no signature: trust it
        signature = inspect.signature(obj)
        try:
            signature.bind(None, None)
        except TypeError:
            raise UserError(
                f"--loss {found.name} must take (output, target); its signature is "
                f"{found.name}{signature}"
            ) from None
    stem = Path(found.origin).stem if found.path else found.origin
    return obj, f"{stem}:{found.name}"


# ---------------------------------------------------------------------- output key


def _describe_output(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return format_shape(output)
    return type(output).__name__


def select_output(output: Any, key: str | None) -> torch.Tensor:
    """The tensor the loss uses, from a model's output.

    Args:
        output: a tensor, a dict (or any Mapping, e.g. a ModelOutput) or a tuple/list.
        key: ``--output-key``: a dict key, an integer index, a namedtuple field, or a
            dotted path of those (``0.logits``). None for models returning a tensor.

    Raises:
        UserError: a dict or tuple without a key, a key that is not there, a key for a
            plain tensor, or a selection that is not a tensor.
    """
    if key is None:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, Mapping):
            keys = ", ".join(map(str, output))
            first = next(iter(output), "KEY")
            raise UserError(
                f"the model returns a dict with keys {keys}: choose the one the loss uses with "
                f"--output-key (e.g. --output-key {first})"
            )
        if isinstance(output, (tuple, list)):
            shapes = ", ".join(_describe_output(o) for o in output)
            raise UserError(
                f"the model returns a {type(output).__name__} of {len(output)} items ({shapes}): "
                f"choose the one the loss uses with --output-key (e.g. --output-key 0)"
            )
        raise UserError(f"the model returns a {type(output).__name__}, not a tensor")
    if isinstance(output, torch.Tensor):
        raise UserError(f"--output-key {key} is given but the model returns a single tensor")
    selected = output
    parts = [key] if isinstance(output, Mapping) and key in output else key.split(".")
    for part in parts:
        selected = _select_one(selected, part, key)
    if not isinstance(selected, torch.Tensor):
        raise UserError(f"--output-key {key} selects a {type(selected).__name__}, not a tensor")
    return selected


def _select_one(output: Any, part: str, key: str) -> Any:
    if isinstance(output, Mapping):
        if part in output:
            return output[part]
        raise UserError(
            f"--output-key {key}: the model's output has no key {part!r}; its keys are "
            f"{', '.join(map(str, output))}"
        )
    if isinstance(output, (tuple, list)):
        fields = getattr(output, "_fields", ())
        if part in fields:
            return getattr(output, part)
        try:
            index = int(part)
        except ValueError:
            index = None
        if index is not None and -len(output) <= index < len(output):
            return output[index]
        names = f" or one of {', '.join(fields)}" if fields else ""
        raise UserError(
            f"--output-key {key}: the model returns {len(output)} items, so use an index "
            f"0..{len(output) - 1}{names}"
        )
    raise UserError(f"--output-key {key}: cannot select {part!r} from a {type(output).__name__}")


