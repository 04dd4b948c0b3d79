"""The user's own data and loss, and a shape check before training.

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

``--loss`` is ``cross-entropy``, ``mse``, ``l1``, ``bce-with-logits``, or
``file.py:function`` taking ``(output, target)`` and returning a scalar tensor (an
``nn.Module`` loss class is instantiated without arguments). ``--output-key`` picks the
tensor the loss uses from a model that returns a dict or a tuple.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import random
import re
from collections.abc import Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from vgdiag.data import DATASETS, DataBundle, Split, TensorSplit
from vgdiag.errors import UserError
from vgdiag.experiment import LossFn
from vgdiag.loading import (
    describe_exception,
    one_line,
    preserved_rng,
    resolve_spec,
    user_code_path,
    where_in,
)

# Data up to this size is stacked into tensors held on the device; 2 GiB fits any
# current GPU beside a model, and beyond it host memory for the copy becomes a concern.
MAX_TENSOR_BYTES = 2 * 1024**3
# Batch size of the DataLoader made here for large map-style or iterable datasets
# when only a scan is needed (counting samples, finding the largest class index).
_SCAN_BATCH = 256
# Samples in the shape check's forward: two, so BatchNorm in training mode still works.
CHECK_SAMPLES = 2

SplitSource = DataLoader | Dataset


# ---------------------------------------------------------------------------- tensors


def _normalise_input(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype == torch.float64 else x


def _normalise_target(y: torch.Tensor) -> torch.Tensor:
    if y.dtype == torch.bool or y.is_floating_point():
        return y.float() if y.dtype in (torch.float64, torch.bool) else y
    return y.long()


def _as_tensor(value: Any, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value) if not np.isscalar(value) else value)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(
            f"{where} is a {type(value).__name__}, not a tensor, array or number: convert it "
            f"in the dataset (e.g. torchvision's transforms.ToTensor())"
        ) from None


def _pair(item: Any, where: str) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    size = f" of {len(item)} items" if isinstance(item, (tuple, list)) else ""
    raise UserError(
        f"{where} is a {type(item).__name__}{size}: each item must be an (input, target) pair"
    )


def _shape(t: torch.Tensor | torch.Size | tuple[int, ...]) -> str:
    dims = tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t)
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


# ----------------------------------------------------------------------- LoaderSplit


class LoaderSplit:
    """A split read batch by batch: a user's DataLoader, or a dataset too big to stack.

    Implements :class:`vgdiag.data.Split`. A DataLoader keeps its own batch size,
    sampler and shuffling; `batches` ignores `batch_size` and `generator` for it. A
    dataset is read through a DataLoader made per epoch with the trainer's batch size,
    shuffled with the trainer's generator when given (map-style datasets only).
    """

    def __init__(
        self,
        source: SplitSource,
        *,
        device: torch.device | str | None = None,
        size: int | None = None,
        loader_batches: int | None = None,
    ) -> None:
        """Wrap `source`.

        Args:
            source: a DataLoader, or a Dataset (map-style or iterable).
            device: where batches are moved (None: left where they are).
            size: number of samples, when the source cannot tell (an iterable dataset).
            loader_batches: batches per epoch of a DataLoader that cannot tell.
        """
        self.source = source
        self.device = None if device is None else torch.device(device)
        self._size = size
        self._loader_batches = loader_batches

    @property
    def dataset(self) -> Any:
        """The underlying dataset (the DataLoader's, or the source itself)."""
        return self.source.dataset if isinstance(self.source, DataLoader) else self.source

    def __len__(self) -> int:
        dataset = self.dataset
        if isinstance(dataset, Sized) and not isinstance(dataset, IterableDataset):
            return len(dataset)
        if self._size is None:
            self._size = _scan(self).size
        return self._size

    def to(self, device: torch.device | str) -> LoaderSplit:
        return LoaderSplit(
            self.source, device=device, size=self._size, loader_batches=self._loader_batches
        )

    def _loader(self, batch_size: int, generator: torch.Generator | None) -> DataLoader:
        if isinstance(self.source, DataLoader):
            return self.source
        order: list[int] | None = None
        if generator is not None and not isinstance(self.source, IterableDataset):
            # The same permutation TensorSplit draws, so a dataset gives the same batches
            # whether it was stacked or streamed.
            order = torch.randperm(len(self), generator=generator).tolist()
        # A generator of its own: a DataLoader draws a worker seed per epoch, which must
        # come from neither the trainer's generator nor the global random state.
        return DataLoader(
            self.source, batch_size=batch_size, sampler=order, generator=torch.Generator()
        )

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, targets) batches on this split's device."""
        loader = self._loader(batch_size, generator)
        non_blocking = bool(getattr(loader, "pin_memory", False))
        for index, batch in enumerate(loader):
            x, y = _pair(batch, f"batch {index} of the data")
            x = _normalise_input(_as_tensor(x, f"the inputs of batch {index}"))
            y = _normalise_target(_as_tensor(y, f"the targets of batch {index}"))
            if self.device is not None:
                x = x.to(self.device, non_blocking=non_blocking)
                y = y.to(self.device, non_blocking=non_blocking)
            yield x, y

    def num_batches(self, batch_size: int) -> int:
        if isinstance(self.source, DataLoader):
            try:
                return len(self.source)
            except TypeError:  # an iterable dataset without __len__
                if self._loader_batches is None:
                    self._loader_batches = _scan(self).batches
                return self._loader_batches
        return -(-len(self) // batch_size)


def _target_batches(split: LoaderSplit) -> Iterator[torch.Tensor]:
    for _, y in split.batches(_SCAN_BATCH):
        yield y


class _Scan:
    """What one pass over a LoaderSplit found."""

    def __init__(self) -> None:
        self.size = 0
        self.batches = 0
        self.max_target = -1
        self.integer_targets = True


def _scan(split: LoaderSplit) -> _Scan:
    found = _Scan()
    with preserved_rng():  # a shuffling DataLoader draws from the global random state
        batches = list(_target_batches(split))
    for y in batches:
        found.size += int(y.shape[0]) if y.dim() else 1
        found.batches += 1
        if y.is_floating_point():
            found.integer_targets = False
        elif y.numel():
            found.max_target = max(found.max_target, int(y.max()))
    split._size = found.size
    if isinstance(split.source, DataLoader):
        split._loader_batches = found.batches
    return found


def _declared_classes(dataset: Any) -> int | None:
    """num_classes, len(classes) or max(targets) + 1 of a dataset or what it wraps."""
    for _ in range(4):  # Subset of Subset of ...: follow .dataset a few levels
        if dataset is None:
            return None
        declared = getattr(dataset, "num_classes", None)
        if isinstance(declared, int) and declared > 0:
            return declared
        classes = getattr(dataset, "classes", None)
        if isinstance(classes, Sized) and not isinstance(classes, str) and len(classes) > 0:
            return len(classes)
        targets = getattr(dataset, "targets", None)
        if targets is not None and not isinstance(targets, str):
            with contextlib.suppress(TypeError, ValueError, RuntimeError, UserError):
                t = _as_tensor(targets, "targets")
                if t.numel() and not t.is_floating_point():
                    return int(t.max()) + 1
        dataset = getattr(dataset, "dataset", None)
    return None


# -------------------------------------------------------------------- materialising


def _tensor_pair_split(pair: Sequence[Any], which: str) -> TensorSplit:
    x = _normalise_input(_as_tensor(pair[0], f"the {which} inputs"))
    y = _normalise_target(_as_tensor(pair[1], f"the {which} targets"))
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise UserError(
            f"the {which} inputs {_shape(x)} and targets {_shape(y)} must have the same "
            f"number of samples as their first dimension"
        )
    return TensorSplit(x, y)


def _stack_dataset(dataset: Any, which: str, max_bytes: int) -> TensorSplit | LoaderSplit:
    n = len(dataset)
    x0, y0 = _pair(dataset[0], f"{which}[0]")
    tx0 = _as_tensor(x0, f"the input of {which}[0]")
    ty0 = _as_tensor(y0, f"the target of {which}[0]")
    per_sample = tx0.numel() * tx0.element_size() + ty0.numel() * ty0.element_size()
    if per_sample * n > max_bytes:
        return LoaderSplit(dataset)
    xs, ys = [tx0], [ty0]
    for i in range(1, n):
        xi, yi = _pair(dataset[i], f"{which}[{i}]")
        tx = _as_tensor(xi, f"the input of {which}[{i}]")
        ty = _as_tensor(yi, f"the target of {which}[{i}]")
        for got, first, part in ((tx, tx0, "input"), (ty, ty0, "target")):
            if got.shape != first.shape:
                raise UserError(
                    f"{which}[{i}] has {part} shape {_shape(got)} but {which}[0] has "
                    f"{_shape(first)}: make every {part} the same shape in the dataset, or "
                    f"return a DataLoader with its own collate_fn"
                )
        xs.append(tx)
        ys.append(ty)
    return TensorSplit(_normalise_input(torch.stack(xs)), _normalise_target(torch.stack(ys)))


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
        f"{shown} returned a {type(result).__name__}{size}: return (train, val) or "
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


def _first_batch(split: Split, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(split, TensorSplit):
        return split.x[:1], split.y[:1]
    batches = split.batches(_SCAN_BATCH)
    try:
        for x, y in batches:
            return x, y
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    raise UserError(f"the {which} split yields no batches")


def _num_classes(splits: list[Split], train: Split, first_targets: torch.Tensor) -> int:
    tensor_targets = [s.y for s in splits if isinstance(s, TensorSplit)]
    if first_targets.is_floating_point() or any(y.is_floating_point() for y in tensor_targets):
        return 0
    largest = max((int(y.max()) for y in tensor_targets if y.numel()), default=-1)
    if isinstance(train, LoaderSplit):
        declared = _declared_classes(train.dataset)
        if declared is None:
            found = _scan(train)
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
    try:
        with _seeded(seed), user_code_path(found.folder):
            result = factory(**kwargs)
    except UserError:
        raise
    except Exception as exc:
        where = where_in(exc, found.path)
        raise UserError(f"{shown} raised {describe_exception(exc)}{where}") from exc

    raw_train, raw_val, raw_test = _unpack(result, shown)
    train = _to_split(raw_train, "train", max_tensor_bytes)
    val = _to_split(raw_val, "val", max_tensor_bytes)
    test = None if raw_test is None else _to_split(raw_test, "test", max_tensor_bytes)
    splits = [s for s in (train, val, test) if s is not None]
    name = f"{Path(found.origin).stem if found.path else found.origin}:{found.name}"
    with preserved_rng():  # reading a shuffling DataLoader draws from the global state
        first_x, first_y = _first_batch(train, "train")
        num_classes = _num_classes(splits, train, first_y)
    return DataBundle(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        input_shape=tuple(first_x.shape[1:]),
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


# ---------------------------------------------------------------------- output key


def _describe_output(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return _shape(output)
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


# --------------------------------------------------------------------- shape check


class _LayerTrace:
    """Forward hooks that record which layer was running when the forward failed."""

    def __init__(self, model: nn.Module) -> None:
        self.running: list[tuple[str, nn.Module, tuple[int, ...] | None]] = []
        self.last_done: str | None = None
        self._handles: list[Any] = []
        for name, module in model.named_modules():
            owns = any(True for _ in module.parameters(recurse=False))
            leaf = not any(True for _ in module.children())
            if not (owns or leaf):
                continue
            try:
                self._handles.append(module.register_forward_pre_hook(self._enter(name)))
                self._handles.append(module.register_forward_hook(self._leave(name)))
            except RuntimeError:  # TorchScript modules take no hooks: no name for them
                continue

    def _enter(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            first = args[0] if args else None
            shape = tuple(first.shape) if isinstance(first, torch.Tensor) else None
            self.running.append((name, module, shape))

        return hook

    def _leave(self, name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            if self.running and self.running[-1][0] == name:
                self.running.pop()
            self.last_done = name

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextlib.contextmanager
def _buffers_restored(model: nn.Module) -> Iterator[None]:
    """Put buffers (BatchNorm running statistics...) back as they were."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in saved:
                    buffer.copy_(saved[name])


def _layer_label(name: str, module: nn.Module) -> str:
    return f"layer {name or '<root>'!r} ({type(module).__name__})"


def _explain_forward_error(
    exc: Exception, trace: _LayerTrace, x: torch.Tensor, bundle: DataBundle
) -> str:
    message = one_line(str(exc), 1000)
    data_shape = _shape(bundle.input_shape)
    layer = trace.running[-1] if trace.running else None
    label = _layer_label(layer[0], layer[1]) if layer else "the model"
    raw_input = layer is not None and layer[2] == tuple(x.shape)

    match = re.search(
        r"weight of size \[[^\]]*\], expected input\[[^\]]*\] to have (\d+) channels, "
        r"but got (\d+) channels",
        message,
    )
    if match:
        expected, got = match.groups()
        if raw_input or layer is None:
            return (
                f"the model expects {expected} input channels but the data has {got} "
                f"(input shape {data_shape}): change {label}'s in_channels to {got}"
            )
        return f"{label} expects {expected} input channels but gets {got}: change its in_channels"

    match = re.search(
        r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x\d+\)", message
    )
    if match:
        _, got, expected = match.groups()
        if layer is not None and layer[2] is not None and len(layer[2]) > 2 and raw_input:
            return (
                f"{label} expects {expected} input features but gets the data's "
                f"{data_shape}-shaped inputs unflattened: flatten them first (nn.Flatten())"
            )
        return (
            f"{label} expects {expected} input features but gets {got} (the data's input "
            f"shape is {data_shape}): change its in_features to {got}"
        )

    match = re.search(r"Expected (\d+)D \(unbatched\) or (\d+)D \(batched\) input", message)
    if match:
        got_shape = _shape(layer[2]) if layer and layer[2] else "?"
        return (
            f"{label} expects {match.group(2)}-D inputs (batch first) but gets shape "
            f"{got_shape}; the data's input shape is {data_shape}"
        )

    match = re.search(
        r"input.size\(-1\) must be equal to input_size. Expected (\d+), got (\d+)", message
    )
    if match:
        expected, got = match.groups()
        return (
            f"{label} expects {expected} input features per step but gets {got}: "
            f"change its input_size to {got}"
        )

    match = re.search(r"running_mean should contain (\d+) elements not (\d+)", message)
    if match:
        got, expected = match.groups()
        return (
            f"{label} expects {expected} features but gets {got}: change its num_features to {got}"
        )

    match = re.search(
        r"Given normalized_shape=\[([^\]]*)\], expected input with shape \[\*, ([^\]]*)\], "
        r"but got input of size\s*\[([^\]]*)\]",
        message,
    )
    if match:
        normalized, _, got = match.groups()
        return f"{label} normalises over [{normalized}] but gets inputs of shape [{got}]"

    if "'indices'" in message and "scalar types" in message:
        return f"{label} needs integer token ids but the data's inputs are {x.dtype}"

    if isinstance(exc, IndexError) and layer is not None and isinstance(layer[1], nn.Embedding):
        rows = layer[1].num_embeddings
        return (
            f"{label} has {rows} rows but the inputs hold ids up to {int(x.max())}: "
            f"raise its num_embeddings to {int(x.max()) + 1}"
        )

    if re.search(r"dtype|scalar type|Input type \(|should be the same", message):
        owner = layer[1] if layer else None
        param = next(owner.parameters(), None) if owner is not None else None
        weights = param.dtype if param is not None else torch.get_default_dtype()
        if x.dtype != weights:
            return (
                f"the model's weights are {weights} but the inputs are {x.dtype}: convert the "
                f"inputs in the data (e.g. x.float(), and / 255 for images stored as bytes)"
            )

    match = re.search(r"shape '\[([^\]]*)\]' is invalid for input of size (\d+)", message)
    if match:
        after = f" after {trace.last_done!r}" if trace.last_done else ""
        return (
            f"a view/reshape in the model's forward{after} cannot make shape [{match.group(1)}] "
            f"from {match.group(2)} values: the data's input shape is {data_shape}; "
            f"x.flatten(1) avoids hard-coding the size"
        )

    if "Output size is too small" in message:
        return (
            f"{label} shrinks the input to nothing: the data's inputs {data_shape} are too small "
            f"for this many poolings or strided layers"
        )

    in_layer = f" in {label}" if layer else ""
    return (
        f"the model failed on {x.shape[0]} training samples of shape {data_shape}{in_layer}: "
        f"{describe_exception(exc)}"
    )


def _check_cross_entropy(
    output: torch.Tensor, y: torch.Tensor, bundle: DataBundle, warnings: list[str]
) -> None:
    if y.is_floating_point():
        if output.shape != y.shape:
            raise UserError(
                f"cross-entropy needs integer class targets (or class probabilities shaped like "
                f"the output), but the targets are float with shape {_shape(y)}: use --loss mse "
                f"for regression"
            )
        return
    if not output.is_floating_point():
        raise UserError(
            f"the model outputs {output.dtype} values: cross-entropy needs the raw scores "
            f"(logits), not predicted labels"
        )
    known = bundle.num_classes
    needed = max(known, int(y.max()) + 1 if y.numel() else 0)
    span = f"targets 0..{needed - 1}"
    if output.dim() < 2:
        raise UserError(
            f"the model outputs shape {_shape(output)}, one number per sample, but cross-entropy "
            f"needs (batch, classes) scores: give its last layer {needed} outputs"
        )
    classes = int(output.shape[1])
    if classes < needed:
        hint = " (or one output with --loss bce-with-logits)" if needed == 2 else ""
        raise UserError(
            f"the model outputs {classes} classes but the data has {needed} ({span}): "
            f"change the model's last layer to {needed} outputs{hint}"
        )
    if classes > needed:
        warnings.append(
            f"the model outputs {classes} classes but the data has {needed} ({span}): "
            f"fine if the data lacks the top classes, otherwise shrink the last layer"
        )
    wanted = (int(output.shape[0]), *output.shape[2:])
    if tuple(y.shape) != wanted:
        raise UserError(
            f"cross-entropy with outputs of shape {_shape(output)} needs targets of shape "
            f"{_shape(wanted)}, but they are {_shape(y)}"
        )


def _check_elementwise(output: torch.Tensor, y: torch.Tensor, loss_name: str) -> None:
    if output.shape == y.shape:
        return
    if not y.is_floating_point() and y.dim() == 1 and output.dim() == 2 and output.shape[1] > 1:
        raise UserError(
            f"{loss_name} compares outputs and targets element by element, but the model "
            f"outputs {_shape(output)} and the targets are class labels {_shape(y)}: use "
            f"--loss cross-entropy"
        )
    raise UserError(
        f"the model outputs shape {_shape(output)} but the targets have shape {_shape(y)}: "
        f"{loss_name} needs them equal (broadcasting would compare every pair); reshape the "
        f"output or the targets"
    )


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    return None


def check_shapes(
    model: nn.Module,
    bundle: DataBundle,
    loss_name: str,
    output_key: str | None = None,
    *,
    loss_fn: LossFn | None = None,
) -> list[str]:
    """Run the model and the loss on two training samples, to catch mismatches early.

    The model is left as it was: buffers (BatchNorm running statistics) are restored and
    the global random state is preserved. The batch goes to the model's device.

    Args:
        model: the built model (training or eval mode, as the trainer will use it).
        bundle: the data.
        loss_name: the name from :func:`resolve_loss` (built-in names get shape checks).
        output_key: ``--output-key``, for models returning a dict or tuple.
        loss_fn: the loss to run (default: the built-in one named `loss_name`).

    Returns:
        Warnings that do not stop a run (e.g. more output classes than the data has).

    Raises:
        UserError: one line naming the mismatch and what to change.
    """
    warnings: list[str] = []
    if isinstance(bundle.train, TensorSplit):
        x, y = bundle.train.x[:CHECK_SAMPLES], bundle.train.y[:CHECK_SAMPLES]
    else:
        x, y = _first_batch(bundle.train, "train")
        x, y = x[:CHECK_SAMPLES], y[:CHECK_SAMPLES]
    device = _model_device(model)
    if device is not None:
        x, y = x.to(device), y.to(device)

    fn = loss_fn if loss_fn is not None else LOSSES.get(loss_name)
    trace = _LayerTrace(model)
    with preserved_rng(), _buffers_restored(model):
        try:
            try:
                raw = model(x)
            except UserError:
                raise
            except Exception as exc:
                raise UserError(_explain_forward_error(exc, trace, x, bundle)) from exc
        finally:
            trace.close()
        output = select_output(raw, output_key)
        if output.dim() == 0 or output.shape[0] != x.shape[0]:
            rows = "a single number" if output.dim() == 0 else f"{output.shape[0]} rows"
            raise UserError(
                f"the model outputs {rows} for a batch of {x.shape[0]} samples (output shape "
                f"{_shape(output)}): keep the batch dimension first (a view(-1, ...) with a "
                f"wrong size folds it)"
            )
        if loss_name == "cross-entropy":
            _check_cross_entropy(output, y, bundle, warnings)
        elif loss_name in _ELEMENTWISE:
            _check_elementwise(output, y, loss_name)
        if fn is not None:
            _check_loss(fn, loss_name, output, y, model, warnings)
    return warnings


def _check_loss(
    fn: LossFn,
    loss_name: str,
    output: torch.Tensor,
    y: torch.Tensor,
    model: nn.Module,
    warnings: list[str],
) -> None:
    try:
        loss = fn(output, y)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"the loss {loss_name} failed on outputs {_shape(output)} and targets {_shape(y)} "
            f"({y.dtype}): {describe_exception(exc)}"
        ) from exc
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = _shape(loss) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise UserError(
            f"the loss {loss_name} returned {what}, not a single number: reduce it (e.g. .mean())"
        )
    trainable = any(p.requires_grad for p in model.parameters())
    if torch.is_grad_enabled() and trainable and not loss.requires_grad:
        raise UserError(
            f"the loss {loss_name} does not depend on the model's parameters: is the output "
            f"detached, turned into labels, or computed under torch.no_grad()?"
        )
    value = float(loss.detach())
    if not math.isfinite(value):
        warnings.append(f"the loss is {value} on two training samples before any training")
