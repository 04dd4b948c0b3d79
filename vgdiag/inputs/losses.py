"""--loss and --output-key: the loss a run uses, and which output it reads.

``--loss`` is ``cross-entropy``, ``mse``, ``l1``, ``bce-with-logits``, or
``file.py:function`` taking ``(output, target)`` and returning a scalar tensor (an
``nn.Module`` loss class is instantiated without arguments). ``--output-key`` picks the
tensor the loss uses from a model that returns a dict or a tuple.
"""

from __future__ import annotations

import contextlib
import inspect
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vgdiag.engine.experiment import LossFn
from vgdiag.errors import UserError
from vgdiag.inputs.usercode import (
    describe_exception,
    resolve_spec,
)

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
