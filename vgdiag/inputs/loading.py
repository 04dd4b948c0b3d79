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

import copy
import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vgdiag.engine.experiment import ModelFactory
from vgdiag.engine.interrupts import is_user_exit
from vgdiag.errors import UserError
from vgdiag.inputs.checkpoints import fit_state_dict, load_saved_model, load_state_dict_file
from vgdiag.inputs.modelargs import parse_model_args
from vgdiag.inputs.options import SAVED_MODEL_SUFFIXES
from vgdiag.inputs.usercode import (
    describe_exception,
    is_model_candidate,
    preserved_rng,
    resolve_spec,
    user_code_path,
    where_in,
)
from vgdiag.textfmt import a_type

SPEC_FORMS = "path/to/file.py:Name, package.module:Name, or a TorchScript file (.pt, .ts)"


def _copying_factory(original: nn.Module) -> ModelFactory:
    if isinstance(original, torch.jit.ScriptModule):
        # A deep copy of a ScriptModule has parameters that are not leaves (optimizers
        # refuse them): each build loads its own copy of the saved module instead.
        blob = io.BytesIO()
        torch.jit.save(original, blob)
        saved = blob.getvalue()

        def load() -> nn.Module:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.load(io.BytesIO(saved), map_location="cpu")

        return load

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
            raise UserError(f"{display}() returned {a_type(model)}, not a torch.nn.Module")
        return model

    return build


def with_weights(factory: ModelFactory, weights: Path,
                 model: nn.Module | None = None) -> ModelFactory:
    """`factory` with a state dict file loaded strictly onto every model it builds.

    Raises:
        UserError: the file cannot be read or does not fit the model (`model`, one the
            factory built, or a new one).
    """
    model = factory() if model is None else model
    state = fit_state_dict(model, load_state_dict_file(Path(weights)), source=str(weights))
    return _with_weights(factory, state)


def _with_weights(factory: ModelFactory, state: dict[str, torch.Tensor]) -> ModelFactory:
    def build() -> nn.Module:
        model = factory()
        model.load_state_dict(state, strict=True)
        return model

    return build


def _check_model(model: nn.Module, display: str) -> None:
    params = list(model.parameters())
    # A lazy parameter has no size until the first forward pass: it still counts.
    if not any(nn.parameter.is_lazy(p) or p.numel() for p in params):
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
        factory = with_weights(factory, Path(weights), model)
    return factory, display
