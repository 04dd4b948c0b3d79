"""The user's own data: ``--data file.py:factory`` -> a DataBundle.

``--data file.py:factory`` (or ``package.module:factory``) names a function that
takes no required arguments -- it may take a ``seed`` keyword, which receives the run's
seed -- and returns ``(train, val)`` or ``(train, val, test)`` (a dict with those keys
works too). Each split is one of:

- a map-style ``torch.utils.data.Dataset`` yielding ``(input, target)`` pairs. Up to
  ``MAX_TENSOR_BYTES`` of data it is read once and stacked into tensors that live on
  the training device (a ``TensorSplit``), so batches cost one index, not a loader
  round trip. Random augmentation would be frozen by that read: return a DataLoader
  for such data. A larger dataset is read batch by batch through a DataLoader made
  here, shuffled with the trainer's generator (the same order a TensorSplit gives).
- a ``torch.utils.data.DataLoader`` (or an ``IterableDataset``): wrapped as a
  :class:`LoaderSplit` that iterates it each epoch. A DataLoader keeps its own batch
  size, sampler and shuffling: the trainer's ``batch_size`` and ``generator`` are
  ignored for it. Batches are moved to the training device as they come.
- an ``(inputs, targets)`` pair of tensors or numpy arrays.

The factory runs with torch seeded from the run's seed (and the global random state
restored afterwards), so a ``random_split`` in it is reproducible. Inputs in float64
become float32; integer targets become int64 (class indices); float targets float32.
``num_classes`` is ``max(target) + 1`` over integer targets (0 for float targets);
for a DataLoader it comes from the dataset's ``num_classes``, ``classes`` or
``targets`` attribute, or else from one pass over the training loader.
``input_shape`` is the shape of the first training input.

A DataLoader with ``num_workers > 0`` under the "spawn" start method (macOS, Windows)
pickles the dataset by its class's module name: put such a dataset class in an
importable package and use the ``package.module:factory`` form.
"""

from __future__ import annotations

import contextlib
import inspect
import random
from collections.abc import Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from vgdiag.engine.interrupts import is_user_exit
from vgdiag.engine.outputs import format_shape as _shape
from vgdiag.engine.splits import DataBundle, Split, TensorSplit
from vgdiag.errors import UserError
from vgdiag.inputs.datasets import DATASETS
from vgdiag.inputs.loader_split import (
    LoaderSplit,
    as_pair,
    as_tensor,
    declared_classes,
    first_batch,
    normalise_input,
    normalise_target,
    scan,
)
from vgdiag.inputs.usercode import (
    describe_exception,
    preserved_rng,
    resolve_spec,
    user_code_path,
    where_in,
)
from vgdiag.textfmt import a_type

# Data up to this size is stacked into tensors held on the device; 2 GiB fits any
# current GPU beside a model, and beyond it host memory for the copy becomes a concern.
MAX_TENSOR_BYTES = 2 * 1024**3


# -------------------------------------------------------------------- materialising


def _tensor_pair_split(pair: Sequence[Any], which: str) -> TensorSplit:
    x = normalise_input(as_tensor(pair[0], f"the {which} inputs"))
    y = normalise_target(as_tensor(pair[1], f"the {which} targets"))
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise UserError(
            f"the {which} inputs {_shape(x)} and targets {_shape(y)} must have the same "
            f"number of samples as their first dimension"
        )
    return TensorSplit(x, y)


def _stack_dataset(dataset: Any, which: str, max_bytes: int) -> TensorSplit | LoaderSplit:
    n = len(dataset)
    x0, y0 = as_pair(dataset[0], f"{which}[0]")
    tx0 = as_tensor(x0, f"the input of {which}[0]")
    ty0 = as_tensor(y0, f"the target of {which}[0]")
    per_sample = tx0.numel() * tx0.element_size() + ty0.numel() * ty0.element_size()
    if per_sample * n > max_bytes:
        return LoaderSplit(dataset)
    xs, ys = [tx0], [ty0]
    for i in range(1, n):
        xi, yi = as_pair(dataset[i], f"{which}[{i}]")
        tx = as_tensor(xi, f"the input of {which}[{i}]")
        ty = as_tensor(yi, f"the target of {which}[{i}]")
        for got, first, part in ((tx, tx0, "input"), (ty, ty0, "target")):
            if got.shape != first.shape:
                raise UserError(
                    f"{which}[{i}] has {part} shape {_shape(got)} but {which}[0] has "
                    f"{_shape(first)}: make every {part} the same shape in the dataset, or "
                    f"return a DataLoader with its own collate_fn"
                )
        xs.append(tx)
        ys.append(ty)
    return TensorSplit(normalise_input(torch.stack(xs)), normalise_target(torch.stack(ys)))


def _to_split(obj: Any, which: str, max_bytes: int) -> Split:
    if isinstance(obj, (DataLoader, IterableDataset)):
        return LoaderSplit(obj)
    if isinstance(obj, TensorDataset):
        if len(obj.tensors) != 2:
            raise UserError(
                f"the {which} TensorDataset holds {len(obj.tensors)} tensors: it must hold "
                f"two, inputs and targets"
            )
        split: Split = _tensor_pair_split(obj.tensors, which)
    elif (
        isinstance(obj, (tuple, list))
        and len(obj) == 2
        and isinstance(obj[0], (torch.Tensor, np.ndarray))
    ):
        split = _tensor_pair_split(obj, which)
    elif isinstance(obj, Sized) and hasattr(obj, "__getitem__"):
        if len(obj) == 0:
            raise UserError(f"the {which} split is empty")
        split = _stack_dataset(obj, which, max_bytes)
    else:
        raise UserError(
            f"the {which} split is a {type(obj).__name__}: return a torch Dataset, a "
            f"DataLoader or an (inputs, targets) pair of tensors"
        )
    if len(split) == 0:
        raise UserError(f"the {which} split is empty")
    return split


def _unpack(result: Any, shown: str) -> tuple[Any, Any, Any]:
    if isinstance(result, Mapping):
        unknown = set(result) - {"train", "val", "test"}
        if "train" not in result or "val" not in result or unknown:
            raise UserError(
                f"{shown} returned a dict with keys {', '.join(map(str, result))}: "
                f"use train, val and optionally test"
            )
        return result["train"], result["val"], result.get("test")
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        return result[0], result[1], result[2] if len(result) == 3 else None
    size = f" of {len(result)} items" if isinstance(result, (tuple, list)) else ""
    raise UserError(
        f"{shown} returned {a_type(result)}{size}: return (train, val) or "
        f"(train, val, test)"
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and random for the user's factory, then restore their state."""
    with preserved_rng():
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        yield


def _factory_kwargs(factory: Any, shown: str, seed: int) -> dict[str, Any]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    required = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name != "seed"
    ]
    if required:
        raise UserError(
            f"{shown} must take no required arguments (it needs {', '.join(required)}): give "
            f"them defaults"
        )
    names = {p.name for p in parameters if p.kind is not p.POSITIONAL_ONLY}
    return {"seed": seed} if "seed" in names else {}


def _num_classes(splits: list[Split], train: Split, first_targets: torch.Tensor) -> int:
    tensor_targets = [s.y for s in splits if isinstance(s, TensorSplit)]
    if first_targets.is_floating_point() or any(y.is_floating_point() for y in tensor_targets):
        return 0
    largest = max((int(y.max()) for y in tensor_targets if y.numel()), default=-1)
    if isinstance(train, LoaderSplit):
        declared = declared_classes(train.dataset)
        if declared is None:
            found = scan(train)
            if not found.integer_targets:
                return 0
            declared = found.max_target + 1
        largest = max(largest, declared - 1)
    return largest + 1 if largest >= 0 else 0


def load_user_data(spec: str, *, seed: int, max_tensor_bytes: int = MAX_TENSOR_BYTES) -> DataBundle:
    """Call the user's data factory and turn its splits into a DataBundle (on the CPU).

    Args:
        spec: ``path/to/file.py:factory`` or ``package.module:factory``.
        seed: passed to the factory's ``seed`` keyword if it has one; torch is seeded
            with it while the factory runs.
        max_tensor_bytes: map-style datasets up to this size are stacked into tensors.

    Raises:
        UserError: a bad spec, a factory that fails or returns something else than
            described in this module's docstring, or splits that are empty or ragged.
    """
    spec = spec.strip()
    if ":" not in spec:
        raise UserError(
            f"--data {spec!r} is not a data spec: use a built-in dataset "
            f"({', '.join(DATASETS)}) or path/to/file.py:factory"
        )
    found = resolve_spec(
        spec,
        option="--data",
        what="a function returning (train, val[, test])",
        accept=inspect.isfunction,
    )
    factory = found.obj
    shown = f"{found.name}()"
    if isinstance(factory, type) or not callable(factory):
        raise UserError(
            f"--data {found.name} in {found.origin} is a {type(factory).__name__}: name a "
            f"function that returns (train, val) or (train, val, test)"
        )
    kwargs = _factory_kwargs(factory, shown, seed)
    with _user_code(f"{shown} raised", found.path), _seeded(seed), user_code_path(found.folder):
        result = factory(**kwargs)
    # Reading the splits runs the user's Dataset code (__len__, __getitem__, __iter__).
    with _user_code(f"reading the data of {shown} raised", found.path):
        return _bundle(result, shown, found, max_tensor_bytes)


@contextlib.contextmanager
def _user_code(what: str, path: Path | None) -> Iterator[None]:
    """Whatever the user's code raises here is bad input: one line with its file:line."""
    try:
        yield
    except UserError:
        raise
    except BaseException as exc:
        if not isinstance(exc, Exception) and not is_user_exit(exc):
            raise  # a real Ctrl-C
        raise UserError(f"{what} {describe_exception(exc)}{where_in(exc, path)}") from exc


def _bundle(result: Any, shown: str, found: Any, max_tensor_bytes: int) -> DataBundle:
    raw_train, raw_val, raw_test = _unpack(result, shown)
    train = _to_split(raw_train, "train", max_tensor_bytes)
    val = _to_split(raw_val, "val", max_tensor_bytes)
    test = None if raw_test is None else _to_split(raw_test, "test", max_tensor_bytes)
    splits = [s for s in (train, val, test) if s is not None]
    name = f"{Path(found.origin).stem if found.path else found.origin}:{found.name}"
    with preserved_rng():  # reading a shuffling DataLoader draws from the global state
        first_x, first_y = first_batch(train, "train")
        num_classes = _num_classes(splits, train, first_y)
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(first_x.shape[1:]),
    )

