"""Files written by torch: state dicts (`--weights`), TorchScript and pickled models.

A state dict is read with ``torch.load(weights_only=True)``; a whole pickled model runs
code named by the file, so it is loaded only when the user trusts it (``--trust-pickle``).
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vgdiag.errors import UserError
from vgdiag.inputs.usercode import describe_exception, detail, preserved_rng, user_code_path

# Common checkpoint layouts that wrap the state dict one level down.
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# Prefixes DataParallel/DistributedDataParallel and torch.compile add to every key.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


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
        raise UserError(f"cannot read --weights {path}: {detail(exc)}") from exc
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
            raise UserError(f"cannot load TorchScript {shown}: {detail(exc)}") from exc
    if not _is_torch_save(path):
        raise UserError(f"--model {shown} is neither TorchScript nor a file written by torch.save")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # holds Python objects: a pickled model (handled below)
    except Exception as exc:
        raise UserError(f"cannot read --model {shown}: {detail(exc)}") from exc
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
            f"--model {shown} needs code that cannot be imported here ({detail(exc)}): "
            f"run from the folder where that module imports"
        ) from exc
    except Exception as exc:
        raise UserError(f"cannot unpickle --model {shown}: {describe_exception(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {shown} holds a {type(model).__name__}, not a torch.nn.Module")
    return model


# -------------------------------------------------------------------------- factories
