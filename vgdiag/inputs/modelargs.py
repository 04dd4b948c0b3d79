"""`--model-arg key=value`: strings converted by the model's own signature.

Values are converted by the parameter's annotation (or its default's type when
unannotated): int, float, bool (true/false, 1/0, yes/no, on/off), str, None
(``none``/``null`` for optional parameters), Literal choices, enums (by name), and
tuples or lists of those written ``3,4`` (brackets optional).
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, Literal, Union

from vgdiag.errors import UserError

_TRUE = frozenset({"true", "1", "yes", "y", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "off", "f"})
_NONE = frozenset({"none", "null"})


class _Unsupported(Exception):
    """The annotation is not a type a command-line string can be converted to."""


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    simple = ((int, "an integer"), (float, "a number"), (bool, "true or false"), (str, "text"))
    for kind, words in simple:
        if annotation is kind:
            return words
    if annotation is type(None):
        return "none"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(m.name for m in annotation)
    if origin in (tuple, list) or annotation in (tuple, list):
        return "a comma-separated list such as 3,4"
    return str(annotation)


def _split_items(text: str) -> list[str]:
    body = text.strip()
    if len(body) >= 2 and body[0] + body[-1] in ("()", "[]"):
        body = body[1:-1]
    items = [item.strip() for item in body.split(",")]
    if items and items[-1] == "":  # "3," is a one-item tuple
        items.pop()
    return [] if items == [""] else items


def _guess(text: str) -> Any:
    """A value for an unannotated parameter without a usable default."""
    lowered = text.strip().lower()
    if lowered in _NONE:
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "," in text:
        with contextlib.suppress(ValueError):
            return tuple(float(i) if "." in i else int(i) for i in _split_items(text))
    return text


def convert_value(text: str, annotation: Any) -> Any:
    """Convert one command-line string to the type `annotation` names.

    Raises:
        ValueError: the text does not fit the type (the message says what was expected).
        _Unsupported: the annotation is not a simple value type.
    """
    if annotation is inspect.Parameter.empty or annotation is Any:
        return _guess(text)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    lowered = text.strip().lower()
    if annotation is type(None) or annotation is None:
        if lowered in _NONE:
            return None
        raise ValueError("none")
    if origin in (Union, types.UnionType):
        if type(None) in args and lowered in _NONE:
            return None
        options = [a for a in args if a is not type(None)]
        unsupported = 0
        for option in options:
            try:
                return convert_value(text, option)
            except ValueError:
                pass
            except _Unsupported:
                unsupported += 1
        if unsupported == len(options):
            raise _Unsupported(str(annotation))
        raise ValueError(_describe(annotation))
    if origin is Literal:
        for choice in args:
            shown = str(choice).lower() if isinstance(choice, bool) else str(choice)
            if shown == (lowered if isinstance(choice, bool) else text.strip()):
                return choice
        raise ValueError(_describe(annotation))
    if annotation is bool:
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ValueError(_describe(bool))
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)  # "1e3" is a fine way to write 1000
        except ValueError:
            raise ValueError(_describe(int)) from None
        if not number.is_integer():
            raise ValueError(_describe(int))
        return int(number)
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(_describe(float)) from None
    if annotation is str:
        return text
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        for member in annotation:
            if member.name.lower() == lowered or str(member.value) == text:
                return member
        raise ValueError(_describe(annotation))
    container = origin or annotation
    if container in (tuple, list, Sequence):
        items = _split_items(text)
        if container is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError(f"{len(args)} comma-separated values")
            values = [convert_value(item, kind) for item, kind in zip(items, args, strict=True)]
        else:
            kind = args[0] if args else inspect.Parameter.empty
            values = [convert_value(item, kind) for item in items]
        return list(values) if container is list else tuple(values)
    raise _Unsupported(str(annotation))


def _annotation_from_default(default: Any) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return inspect.Parameter.empty
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int | float  # an int default still takes 0.5
    if isinstance(default, (float, str, enum.Enum)):
        return type(default)
    if isinstance(default, (tuple, list)) and default:
        first = _annotation_from_default(default[0])
        return tuple[first, ...] if isinstance(default, tuple) else list[first]  # type: ignore[valid-type]
    return inspect.Parameter.empty


def _type_hints(target: Callable[..., Any]) -> dict[str, Any]:
    function = target.__init__ if isinstance(target, type) else target  # type: ignore[misc]
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation names something undefined: fall back per parameter
        return {}


def parse_model_args(
    target: Callable[..., Any], pairs: Sequence[str], *, display: str
) -> tuple[list[Any], dict[str, Any]]:
    """Turn ``key=value`` strings into the arguments `target` is called with.

    Args:
        target: the model class or factory function.
        pairs: the ``--model-arg`` values, in order.
        display: the target's name, for messages.

    Returns:
        Positional arguments (for positional-only parameters) and keyword arguments.

    Raises:
        UserError: malformed pairs, unknown keys, missing required arguments, bad values.
    """
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UserError(f"--model-arg {pair!r} is not key=value")
        if key in raw:
            raise UserError(f"--model-arg {key} is given twice")
        raw[key] = value.strip()

    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # no signature (a builtin): pass guessed values through
        return [], {key: _guess(value) for key, value in raw.items()}

    named = [
        p
        for p in parameters
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    known = {p.name for p in named}
    unknown = [key for key in raw if key not in known]
    if unknown and not takes_any:
        valid = f"valid keys are {', '.join(sorted(known))}" if known else "it takes none"
        raise UserError(f"unknown --model-arg {', '.join(unknown)} for {display}: {valid}")
    missing = [p.name for p in named if p.default is p.empty and p.name not in raw]
    if missing:
        raise UserError(
            f"{display} needs a value for {', '.join(missing)}: pass --model-arg {missing[0]}=VALUE"
        )

    hints = _type_hints(target)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in named:
        if p.name not in raw:
            if p.kind is inspect.Parameter.POSITIONAL_ONLY:
                args.append(p.default)
            continue
        annotation = hints.get(p.name, p.annotation)
        if isinstance(annotation, str):  # unresolvable string annotation
            annotation = inspect.Parameter.empty
        if annotation is inspect.Parameter.empty:
            annotation = _annotation_from_default(p.default)
        value = _convert_arg(p.name, raw[p.name], annotation)
        if p.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(value)
        else:
            kwargs[p.name] = value
    for key in unknown:  # accepted through **kwargs
        kwargs[key] = _guess(raw[key])
    return args, kwargs


def _convert_arg(key: str, text: str, annotation: Any) -> Any:
    try:
        return convert_value(text, annotation)
    except _Unsupported:
        raise UserError(
            f"--model-arg {key}: its type {annotation} cannot be given on the command line "
            f"(int, float, bool, str, None, a Literal or a list of them can)"
        ) from None
    except ValueError as exc:
        raise UserError(f"--model-arg {key}={text!r}: expected {exc}") from None


# ---------------------------------------------------------------------------- weights
