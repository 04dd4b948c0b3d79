"""Load the user's own model from a spec string.

Spec forms (the `--model` option):

- ``path/to/file.py:Name`` -- the file is imported as a module of its own (under a
  unique private name, so two files called ``model.py`` never collide). ``Name`` is an
  ``nn.Module`` subclass, a function returning an ``nn.Module``, or a module-level
  ``nn.Module`` instance (copied afresh for each build). While the file is imported,
  and while each model is built, the file's folder is at the front of ``sys.path`` so
  ``from blocks import Block`` finds a sibling file; it is removed again afterwards.
  Sibling modules imported that way stay in ``sys.modules`` under their own names, as
  in any Python program.
- ``package.module:Name`` -- imported with ``importlib.import_module``; the current
  folder is on ``sys.path`` during the import (as ``python -m`` would have it).
- ``model.pt`` / ``model.pth`` / ``model.ts`` -- a TorchScript file (``torch.jit.save``).
  A ``.pt`` written by ``torch.save(model)`` is a pickle: unpickling runs code named by
  the file, so it is loaded only with ``trust_pickle=True`` (``--trust-pickle``).
  Each build returns an independent deep copy of the loaded model. PyTorch does not
  allow forward hooks on TorchScript modules, so only parameter statistics can be
  measured on them.

``--model-arg key=value`` values are converted by the parameter's annotation (or its
default's type when unannotated): int, float, bool (true/false, 1/0, yes/no, on/off),
str, None (``none``/``null`` for optional parameters), Literal choices, enums (by name),
and tuples or lists of those written ``3,4`` (brackets optional).

``weights`` is a file from ``torch.save(model.state_dict(), path)`` (or a checkpoint
dict holding one under ``state_dict``, ``model_state_dict`` or ``model``), read with
``torch.load(weights_only=True)`` and loaded strictly onto every model built.

Every mistake a user can make raises :class:`vgdiag.errors.UserError` with one line.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import enum
import importlib
import importlib.util
import inspect
import itertools
import os
import pickle
import random
import re
import sys
import traceback
import types
import typing
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from torch import nn

from vgdiag.engine.experiment import ModelFactory
from vgdiag.engine.interrupts import describe_exit, is_user_exit
from vgdiag.errors import UserError

SAVED_MODEL_SUFFIXES = (".pt", ".pth", ".ts")
SPEC_FORMS = "path/to/file.py:Name, package.module:Name, or a TorchScript file (.pt, .ts)"
# Long messages from user code are cut so the error stays one readable line.
_MAX_DETAIL = 240
# Common checkpoint layouts that wrap the state dict one level down.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# Prefixes DataParallel/DistributedDataParallel and torch.compile add to every key.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_module_counter = itertools.count()


# --------------------------------------------------------------------------- helpers


def one_line(text: str, limit: int = _MAX_DETAIL) -> str:
    """Collapse whitespace (newlines included) and cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def describe_exception(exc: BaseException) -> str:
    """'TypeError: message' on one line."""
    if isinstance(exc, (SystemExit, KeyboardInterrupt)):
        return describe_exit(exc)
    detail = one_line(str(exc))
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


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


# --------------------------------------------------------------------- spec resolving


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
        return f"{shown}{where}: {one_line(str(exc))}"
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
            listing = f"it defines {', '.join(found)}" if found else f"it defines no {what}"
            raise UserError(f"no {name!r} in {source}{hint}: {listing}")
        obj = getattr(obj, part)
    return UserObject(obj=obj, name=name, origin=source, folder=folder, path=path)


# ---------------------------------------------------------------- argument conversion

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


def _looks_like_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in obj.items())
    )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``.

    Accepts a bare state dict or a checkpoint dict holding one under ``state_dict``,
    ``model_state_dict``, ``model``, ``net`` or ``weights``.

    Raises:
        UserError: a missing file, a file that is not a plain state dict.
    """
    if not path.is_file():
        raise UserError(f"--weights: file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"--weights {path} holds pickled Python objects, not only tensors, so it is not "
            f"loaded: save the weights with torch.save(model.state_dict(), path)"
        ) from exc
    except Exception as exc:
        if _is_torchscript(path):
            raise UserError(
                f"--weights {path} is a TorchScript model, not weights: pass it as --model"
            ) from exc
        raise UserError(f"cannot read --weights {path}: {one_line(str(exc))}") from exc
    if _looks_like_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in _STATE_DICT_KEYS:
            if _looks_like_state_dict(obj.get(key)):
                return dict(obj[key])
        keys = ", ".join(str(k) for k in list(obj)[:6])
        raise UserError(
            f"found no state dict in --weights {path} (its keys: {keys}): save one with "
            f"torch.save(model.state_dict(), path)"
        )
    raise UserError(
        f"--weights {path} holds a {type(obj).__name__}, not a state dict: save one with "
        f"torch.save(model.state_dict(), path)"
    )


def _strip_wrapper_prefix(
    state: dict[str, torch.Tensor], own: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    for prefix in _WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def fit_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], *, source: str
) -> dict[str, torch.Tensor]:
    """Check that `state` fits `model` exactly and return it with wrapper prefixes removed.

    Raises:
        UserError: missing or unexpected keys or different shapes (the first few listed).
    """
    own = model.state_dict()
    state = _strip_wrapper_prefix(state, own)
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    for key, value in own.items():
        theirs = state.get(key)
        if (
            isinstance(theirs, torch.Tensor)
            and isinstance(value, torch.Tensor)
            and theirs.shape != value.shape
        ):
            problems.append(
                f"{key} is {tuple(theirs.shape)} in the file but {tuple(value.shape)} in the model"
            )
    if problems:
        shown = "; ".join(problems[:3])
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise UserError(f"--weights {source} do not fit the model: {shown}{more}")
    return state


# ------------------------------------------------------------------------ saved models


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())


def _is_torch_save(path: Path) -> bool:
    if zipfile.is_zipfile(path):
        return True
    with path.open("rb") as handle:
        return handle.read(1) == b"\x80"  # the pickle protocol marker of the legacy format


def load_saved_model(path: Path, *, trust_pickle: bool, shown: str) -> nn.Module:
    """Load a TorchScript file, or a pickled whole model when `trust_pickle` is set.

    Raises:
        UserError: a missing file, a state dict passed as a model, an untrusted pickle,
            a pickle whose classes cannot be imported, or a file that is neither.
    """
    if not path.is_file():
        raise UserError(f"--model: file not found: {shown}")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # Deprecated in recent PyTorch, but still how TorchScript files are read.
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UserError(f"cannot load TorchScript {shown}: {one_line(str(exc))}") from exc
    if not _is_torch_save(path):
        raise UserError(f"--model {shown} is neither TorchScript nor a file written by torch.save")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds Python objects: a pickled model (handled below)
    except Exception as exc:
        raise UserError(f"cannot read --model {shown}: {one_line(str(exc))}") from exc
    else:
        raise UserError(
            f"--model {shown} holds weights, not a model: name the model's code and pass the "
            f"file as weights (--model file.py:Name --weights {shown})"
        )
    if not trust_pickle:
        raise UserError(
            f"--model {shown} is a pickled model: loading it runs arbitrary code from the file, "
            f"so pass --trust-pickle only for files you trust (or save it with "
            f"torch.jit.script(model).save(path))"
        )
    try:
        with preserved_rng(), user_code_path(Path.cwd()), user_code_path(path.parent):
            model = torch.load(path, map_location="cpu", weights_only=False)
    except (ModuleNotFoundError, AttributeError) as exc:
        if "__main__" in str(exc):
            raise UserError(
                f"--model {shown} was pickled from a class defined in the script that saved it, "
                f"which cannot be imported here: save it with torch.jit.script(model).save(path), "
                f"or save the state dict and use --model file.py:Name --weights"
            ) from exc
        raise UserError(
            f"--model {shown} needs code that cannot be imported here ({one_line(str(exc))}): "
            f"run from the folder where that module imports"
        ) from exc
    except Exception as exc:
        raise UserError(f"cannot unpickle --model {shown}: {describe_exception(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {shown} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


# -------------------------------------------------------------------------- factories


def _copying_factory(original: nn.Module) -> ModelFactory:
    def build() -> nn.Module:
        return copy.deepcopy(original)

    return build


def _calling_factory(
    target: Callable[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
    folder: Path | None,
    display: str,
) -> ModelFactory:
    def build() -> nn.Module:
        with user_code_path(folder):
            model = target(*args, **kwargs)
        if not isinstance(model, nn.Module):
            raise UserError(f"{display}() returned a {type(model).__name__}, not a torch.nn.Module")
        return model

    return build


def _with_weights(factory: ModelFactory, state: dict[str, torch.Tensor]) -> ModelFactory:
    def build() -> nn.Module:
        model = factory()
        model.load_state_dict(state, strict=True)
        return model

    return build


def _check_model(model: nn.Module, display: str) -> None:
    params = list(model.parameters())
    if sum(p.numel() for p in params) == 0:
        raise UserError(f"model has no parameters: nothing to diagnose ({display})")
    if not any(p.requires_grad for p in params):
        raise UserError(
            f"every parameter of {display} is frozen (requires_grad=False): "
            f"nothing to train or diagnose"
        )


def load_model_factory(
    spec: str,
    *,
    model_args: Sequence[str] = (),
    trust_pickle: bool = False,
    weights: Path | None = None,
) -> tuple[ModelFactory, str]:
    """Resolve a ``--model`` spec to a factory of fresh models.

    One model is built here (with the global random state preserved) so that every
    mistake shows up now, as a one-line error, rather than in the middle of a run.

    Args:
        spec: ``path/to/file.py:Name``, ``package.module:Name`` or a TorchScript file.
        model_args: ``key=value`` strings passed to the class or function.
        trust_pickle: allow unpickling a whole model saved with ``torch.save(model)``.
        weights: a state dict file loaded onto every model built.

    Returns:
        A zero-argument callable that builds a new, independent model on each call,
        and a short display name (the class or function name, or the file's stem).

    Raises:
        UserError: anything wrong with the spec, its arguments, the code or the weights.
    """
    spec = spec.strip()
    factory: ModelFactory
    error_path: Path | None = None  # the user's file, for line numbers in errors
    if spec.lower().endswith(SAVED_MODEL_SUFFIXES):
        path = Path(spec).expanduser()
        display = path.stem
        if model_args:
            raise UserError(
                f"--model-arg applies to a class or a function that builds the model; "
                f"{spec} is a saved model"
            )
        factory = _copying_factory(load_saved_model(path, trust_pickle=trust_pickle, shown=spec))
    else:
        if spec.endswith(".py") and ":" not in spec:
            raise UserError(
                f"--model {spec!r} names a file but not the model in it: add :Name "
                f"(e.g. {spec}:Net), where Name is an nn.Module class or a function"
            )
        if ":" not in spec:
            raise UserError(f"--model {spec!r} is not a model spec: use {SPEC_FORMS}")
        found = resolve_spec(
            spec,
            option="--model",
            what="an nn.Module class or a function returning one",
            accept=is_model_candidate,
        )
        obj = found.obj
        error_path = found.path
        display = found.name.rpartition(".")[2]
        if isinstance(obj, nn.Module):
            if model_args:
                raise UserError(
                    f"--model-arg applies to a class or a function; {display} in "
                    f"{found.origin} is an already built model"
                )
            factory = _copying_factory(obj)
        elif isinstance(obj, type):
            if not issubclass(obj, nn.Module):
                raise UserError(
                    f"{display} in {found.origin} is a class but not a torch.nn.Module subclass"
                )
            args, kwargs = parse_model_args(obj, model_args, display=display)
            factory = _calling_factory(obj, args, kwargs, found.folder, display)
        elif callable(obj):
            args, kwargs = parse_model_args(obj, model_args, display=display)
            factory = _calling_factory(obj, args, kwargs, found.folder, display)
        else:
            raise UserError(
                f"{display} in {found.origin} is a {type(obj).__name__}, not an nn.Module "
                f"class or a function returning one"
            )

    with preserved_rng():
        try:
            model = factory()
        except UserError:
            raise
        except BaseException as exc:  # the user's constructor failed: say where, in one line
            if not isinstance(exc, Exception) and not is_user_exit(exc):
                raise  # a real Ctrl-C (or the interpreter leaving)
            raise UserError(
                f"building {display} raised {describe_exception(exc)}{where_in(exc, error_path)}"
            ) from exc
    _check_model(model, display)
    if weights is not None:
        state = fit_state_dict(model, load_state_dict_file(Path(weights)), source=str(weights))
        factory = _with_weights(factory, state)
    return factory, display
