"""Typer signatures written from the option dataclasses (vgdiag.inputs.options).

`@command(RunOptions, CompareOptions)` gives the decorated body a signature with one
option a field, its type, default and help taken from the field, and calls the body with
one instance of each dataclass; so an option is declared once, whichever commands
take it. With `recipe=True` the command also takes `--recipe file.toml`: RunOptions
read from the file, flags given on the command line winning.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from vgdiag.inputs.options import RunOptions, field_types, load_recipe

Group = type | tuple[type, Collection[str]]  # a dataclass, or one and the fields it omits

RECIPE_HELP = ("A TOML file of run options (field = value, e.g. depth = 7); options given "
               "on the command line override it.")


def _is_list(annotation: Any) -> bool:
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    return any(typing.get_origin(a) is list for a in (annotation, *args))


def _parameter(f: dataclasses.Field[Any], annotation: Any) -> inspect.Parameter:
    meta = f.metadata
    help_text = escape(meta.get("help", ""))  # "[...]" in a help text is text, not markup
    if meta.get("argument"):
        info: Any = typer.Argument(help=help_text, metavar=f.name.upper())
        default: Any = inspect.Parameter.empty
        if f.default is not dataclasses.MISSING:
            default = f.default
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                 default=default, annotation=typing.Annotated[annotation, info])
    show: bool | str = meta.get("default_text") or True
    if _is_list(annotation):
        annotation = annotation | None  # Typer's "not given" for a repeatable option
        default = None
    elif f.default is dataclasses.MISSING:
        default = f.default_factory()  # type: ignore[misc,operator]
    else:
        default = f.default
    flags = tuple(meta.get("flags", ()))
    if annotation is bool and not flags and default is False:
        # A plain switch: without it Typer adds a "--no-NAME" twin, whose column takes
        # a fifth of an 80-column `--help` and cuts the help texts short.
        flags = ("--" + f.name.replace("_", "-"),)
        show = meta.get("default_text") or "off"  # Typer shows no default for a switch
    info = typer.Option(*flags, help=help_text, show_default=show)
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=typing.Annotated[annotation, info])


def _groups(groups: tuple[Group, ...]) -> list[tuple[type, list[dataclasses.Field[Any]]]]:
    out = []
    for group in groups:
        cls, omitted = group if isinstance(group, tuple) else (group, ())
        out.append((cls, [f for f in dataclasses.fields(cls) if f.name not in omitted]))
    return out


def command(*groups: Group, recipe: bool = False) -> Callable[[Callable[..., Any]],
                                                              Callable[..., Any]]:
    """Write a Typer command's signature from the fields of `groups`.

    Args:
        *groups: the option dataclasses the command takes, in the order the body
            receives their instances; `(cls, omitted)` leaves some fields out (they
            keep their defaults).
        recipe: add `--recipe`, which fills RunOptions from a TOML file.
    """
    resolved = _groups(groups)

    def decorate(body: Callable[..., Any]) -> Callable[..., Any]:
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    annotation=typer.Context)]
        seen: set[str] = set()
        for cls, fields in resolved:
            hints = field_types(cls)
            for f in fields:
                if f.name in seen:
                    raise TypeError(f"{body.__name__}: option {f.name!r} declared twice")
                seen.add(f.name)
                params.append(_parameter(f, hints[f.name]))
        if recipe:
            params.append(inspect.Parameter(
                "recipe", inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=typing.Annotated[Path | None, typer.Option(
                    help=RECIPE_HELP, show_default="none")]))

        def run_command(ctx: typer.Context, **values: Any) -> Any:
            from_file = load_recipe(values["recipe"]) if values.get("recipe") else {}
            instances = []
            for cls, fields in resolved:
                kwargs: dict[str, Any] = {}
                if cls is RunOptions:
                    kwargs.update(from_file)
                for f in fields:
                    source = ctx.get_parameter_source(f.name)
                    given = source is not None and source.name != "DEFAULT"
                    if f.name in kwargs and not given:
                        continue  # the recipe's value stands
                    value = values[f.name]
                    kwargs[f.name] = list(value or []) if _is_list(field_types(cls)[f.name]) \
                        else value
                instances.append(cls(**kwargs))
            return body(*instances)

        run_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run_command.__annotations__ = {p.name: p.annotation for p in params}
        run_command.__name__ = body.__name__
        run_command.__qualname__ = body.__qualname__
        run_command.__doc__ = body.__doc__
        run_command.__module__ = body.__module__
        return run_command

    return decorate


