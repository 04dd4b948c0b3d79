"""Importing the user's code: a file as a private module, a package module, a
`source:Name` spec; sys.path and the global random state are left as they were; what
goes wrong is one line with the user's file and line.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import itertools
import os
import random
import re
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vgdiag.engine.interrupts import describe_exit, is_user_exit
from vgdiag.errors import UserError
from vgdiag.textfmt import MAX_DETAIL, one_line

_module_counter = itertools.count()


def detail(exc: BaseException) -> str:
    """The exception's message on one line, cut to MAX_DETAIL characters."""
    return one_line(str(exc), MAX_DETAIL)


def describe_exception(exc: BaseException) -> str:
    """'TypeError: message' on one line."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return describe_exit(exc)
    message = detail(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def where_in(exc: BaseException, path: Path | None) -> str:
    """' (file.py:LINE)' for the deepest traceback frame of `exc` in `path`, or ''."""
    if path is None or exc.__traceback__ is None:
        return ""
    wanted = os.path.realpath(path)
    hits = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if os.path.realpath(frame.filename) == wanted
    ]
    return f" ({path.name}:{hits[-1].lineno})" if hits else ""


@contextlib.contextmanager
def user_code_path(folder: Path | None) -> Iterator[None]:
    """Put `folder` at the front of sys.path for the duration, then take it off again.

    Only an entry this call added is removed, so a folder the user already had on the
    path stays there.
    """
    if folder is None:
        yield
        return
    entry = str(folder)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run user code without disturbing torch's, numpy's or Python's global RNG state.

    Builds made to validate a spec must not shift the random state the trainer seeds
    later, or a baseline and its variants would start differently.
    """
    py_state = random.getstate()
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass(frozen=True)
class UserObject:
    """An object named by a ``source:Name`` spec, with where it came from."""

    obj: Any  # the object the spec names
    name: str  # the name after the colon, as given
    origin: str  # the file as the user wrote it, or the module name
    folder: Path | None  # put on sys.path while the user's code runs
    path: Path | None  # the user's file, for line numbers in errors


def _is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or os.sep in source or Path(source).is_file()


def _import_file(path: Path, shown: str) -> types.ModuleType:
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"_vgdiag_user_{stem}_{next(_module_counter)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"cannot import {shown}: name a Python source file (.py)")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: dataclasses, typing and pickle look the module up by name.
    sys.modules[module_name] = module
    try:
        with preserved_rng(), user_code_path(path.parent):
            spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if isinstance(exc, KeyboardInterrupt) and not is_user_exit(exc):
            raise  # a real Ctrl-C while importing
        raise UserError(_import_failure(exc, shown, path)) from exc
    return module


def _import_failure(exc: BaseException, shown: str, path: Path | None) -> str:
    if isinstance(exc, SyntaxError):
        where = exc.filename or shown
        if (
            path is not None
            and exc.filename
            and os.path.realpath(exc.filename) == str(path.resolve())
        ):
            where = shown
        return f"syntax error in {where}:{exc.lineno}: {exc.msg}"
    where = where_in(exc, path)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return (
            f"{shown}{where} imports {exc.name!r}, which cannot be found: "
            f"install it or fix the import"
        )
    if isinstance(exc, ImportError):
        return f"{shown}{where}: {detail(exc)}"
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return (
            f"{shown}{where} "
            + ("exited" if isinstance(exc, SystemExit) else "raised KeyboardInterrupt")
            + " while being imported: put script code under 'if __name__ == \"__main__\":'"
        )
    return f"importing {shown} raised {describe_exception(exc)}{where}"


def _import_module(source: str) -> types.ModuleType:
    try:
        with preserved_rng(), user_code_path(Path.cwd()):
            return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        if exc.name and (source == exc.name or source.startswith(exc.name + ".")):
            raise UserError(
                f"no module named {exc.name!r}: check the spelling and that it is installed, "
                f"or name a file instead (path/to/file.py:Name)"
            ) from exc
        raise UserError(_import_failure(exc, source, None)) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and not is_user_exit(exc):
            raise  # a real Ctrl-C while importing
        raise UserError(_import_failure(exc, source, None)) from exc


def _defined_here(module: types.ModuleType, obj: Any) -> bool:
    return getattr(obj, "__module__", None) == module.__name__


def _candidates(module: types.ModuleType, accept: Callable[[Any], bool]) -> list[str]:
    names = [
        name
        for name, obj in vars(module).items()
        if not name.startswith("_") and accept(obj) and _defined_here(module, obj)
    ]
    if not names:  # e.g. a module that only re-exports
        names = [n for n, o in vars(module).items() if not n.startswith("_") and accept(o)]
    return sorted(names)


def is_model_candidate(obj: Any) -> bool:
    """An nn.Module subclass, an nn.Module instance, or a plain function."""
    if isinstance(obj, type):
        return issubclass(obj, nn.Module)
    return isinstance(obj, nn.Module) or inspect.isfunction(obj)


def resolve_spec(
    spec: str,
    *,
    option: str,
    what: str,
    accept: Callable[[Any], bool],
) -> UserObject:
    """Import the file or module of a ``source:Name`` spec and fetch ``Name``.

    Args:
        spec: ``path/to/file.py:Name`` or ``package.module:Name``.
        option: the command-line option, for messages (``--model``).
        what: what ``Name`` should be, for messages ("an nn.Module class or a function").
        accept: which objects in the module to list when ``Name`` is not found.

    Raises:
        UserError: a malformed spec, a missing file, an import that fails, or no ``Name``.
    """
    source, sep, name = spec.strip().rpartition(":")
    if not sep or not source or not name or "/" in name or "\\" in name or name.endswith(".py"):
        raise UserError(
            f"{option} {spec!r} does not name an object: use path/to/file.py:Name or "
            f"package.module:Name, where Name is {what}"
        )
    if not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"{option} {spec!r}: {name!r} is not a Python name")

    path: Path | None = None
    folder: Path | None = None
    if _is_file_source(source):
        path = Path(source).expanduser()
        if not path.exists():
            raise UserError(f"{option}: file not found: {source}")
        if path.is_dir():
            raise UserError(
                f"{option}: {source} is a folder: name a .py file in it, or use package.module:Name"
            )
        path = path.resolve()
        folder = path.parent
        module = _import_file(path, source)
    else:
        if not all(part.isidentifier() for part in source.split(".")):
            raise UserError(f"{option} {spec!r}: {source!r} is neither a file nor a module name")
        module = _import_module(source)

    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            found = _candidates(module, accept)
            close = difflib.get_close_matches(name, found, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            listing = (f"it defines {', '.join(found)}" if found
                       else f"it defines nothing that is {what}")
            raise UserError(f"no {name!r} in {source}{hint}: {listing}")
        obj = getattr(obj, part)
    return UserObject(obj=obj, name=name, origin=source, folder=folder, path=path)


# ---------------------------------------------------------------- argument conversion
