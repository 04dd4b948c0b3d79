"""The prediction inside a model's output: `--output-key` for dict and tuple outputs.

The trainer and the one-batch check both select it, so it lives with the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from vgdiag.errors import UserError


def format_shape(t: torch.Tensor | torch.Size | tuple[int, ...]) -> str:
    """(2, 3) style text of a tensor's or size's shape, for error messages."""
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _describe_output(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return format_shape(output)
    return type(output).__name__


def _example_key(items: list[tuple[str, Any]], num_classes: int) -> str:
    """The key to suggest: the tensor whose last axis has one entry per class where
    one does (the logits, not the features before them), else the first."""
    for k, v in items:
        if num_classes and isinstance(v, torch.Tensor) and v.dim() >= 1 \
                and v.shape[-1] == num_classes:
            return k
    return items[0][0] if items else "KEY"


def select_output(output: Any, key: str | None, num_classes: int = 0) -> torch.Tensor:
    """The tensor the loss uses, from a model's output.

    Args:
        output: a tensor, a dict (or any Mapping, e.g. a ModelOutput) or a tuple/list.
        key: ``--output-key``: a dict key, an integer index, a namedtuple field, or a
            dotted path of those (``0.logits``). None for models returning a tensor.
        num_classes: the task's classes, where known: the error for a missing key
            suggests the item with one output per class.

    Raises:
        UserError: a dict or tuple without a key, a key that is not there, a key for a
            plain tensor, or a selection that is not a tensor.
    """
    if key is None:
        if isinstance(output, torch.Tensor):
            return output
        if isinstance(output, Mapping):
            items = [(str(k), v) for k, v in output.items()]
            keys = ", ".join(f"{k} {_describe_output(v)}" for k, v in items)
            raise UserError(
                f"the model returns a dict ({keys}): choose the one the loss uses with "
                f"--output-key (e.g. --output-key {_example_key(items, num_classes)})"
            )
        if isinstance(output, (tuple, list)):
            shapes = ", ".join(_describe_output(o) for o in output)
            example = _example_key([(str(i), o) for i, o in enumerate(output)], num_classes)
            raise UserError(
                f"the model returns a {type(output).__name__} of {len(output)} items ({shapes}): "
                f"choose the one the loss uses with --output-key (e.g. --output-key {example})"
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


