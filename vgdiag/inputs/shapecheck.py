"""Before training: one batch forward that turns shape mistakes into one clear line,
and a check of the data of every split (labels, input shapes, NaN/inf)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vgdiag.engine.experiment import LossFn
from vgdiag.engine.outputs import format_shape as _shape
from vgdiag.engine.outputs import select_output
from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.engine.tracebacks import user_location
from vgdiag.errors import UserError
from vgdiag.inputs import datacheck
from vgdiag.inputs.loader_split import first_batch
from vgdiag.inputs.losses import _ELEMENTWISE, LOSSES
from vgdiag.inputs.usercode import describe_exception, preserved_rng
from vgdiag.textfmt import one_line

# Samples in the shape check's forward: two, so BatchNorm in training mode still works.
CHECK_SAMPLES = 2

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
        conv = layer[1] if layer is not None else None
        if (raw_input and isinstance(conv, nn.modules.conv._ConvNd)
                and x.dim() == len(conv.kernel_size) + 1):
            # The batch is read as one unbatched sample whose channels are the samples.
            axes = {1: "length", 2: "height, width", 3: "depth, height, width"}
            return (
                f"{label} takes inputs shaped (batch, channels, "
                f"{axes.get(len(conv.kernel_size), '...')}) but the data's samples have "
                f"shape {data_shape}, with no channel axis: give them one (x.unsqueeze(1) "
                f"makes them (1, {data_shape.strip('()')}), one channel)"
            )
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
        f"{describe_exception(exc)}{user_location(exc)}"
    )


def _check_cross_entropy(
    output: torch.Tensor,
    y: torch.Tensor,
    bundle: DataBundle,
    warnings: list[str],
    batch_targets: torch.Tensor | None = None,
) -> None:
    whole = bundle.train.y if isinstance(bundle.train, TensorSplit) else None
    if y.is_floating_point():
        if output.shape != y.shape:
            shape = _shape(whole) if whole is not None else f"{_shape(y[0].shape)} per sample"
            raise UserError(
                f"cross-entropy needs integer class targets (or class probabilities shaped like "
                f"the output), but the targets are float with shape {shape}: use --loss mse "
                f"for regression, or make them class indices (y.long())"
            )
        return
    if not output.is_floating_point():
        raise UserError(
            f"the model outputs {output.dtype} values: cross-entropy needs the raw scores "
            f"(logits), not predicted labels"
        )
    known = bundle.num_classes
    needed = max(known, int(y.max()) + 1 if y.numel() else 0)
    lowest = int(whole.min()) if whole is not None and whole.numel() else 0
    span = f"targets {max(lowest, 0)}..{needed - 1}"
    if output.dim() > 2 and y.dim() == 1:
        # Which axis holds the classes says which to pool: (N, 8, 10) from a Linear on a
        # sequence pools dim 1; (N, 10, 8) from a Conv1d head pools the positions.
        if int(output.shape[1]) == needed:
            hint = "pool over the positions after dim 1 in forward (out.mean(-1))"
        else:
            hint = ("pool or select to (batch, classes) in forward (out.mean(1), "
                    "out[:, -1] or a flatten before the last layer)")
        raise UserError(
            f"the model outputs shape {_shape(output)} for one target per sample: "
            f"cross-entropy reads (batch, classes, ...) and would take its {output.shape[1]} "
            f"as the classes; {hint}"
        )
    if lowest == 1 and output.dim() >= 2 and int(output.shape[1]) == needed - 1:
        raise UserError(
            f"the training labels run 1..{needed - 1} and the model outputs {needed - 1} "
            f"classes: cross-entropy wants labels 0..{needed - 2}; subtract 1 from the labels "
            f"(no target is 0)"
        )
    if output.dim() < 2:
        raise UserError(
            f"the model outputs shape {_shape(output)}, one number per sample, but cross-entropy "
            f"needs (batch, classes) scores: give its last layer {needed} outputs"
        )
    classes = int(output.shape[1])
    _check_class_targets(bundle, y if batch_targets is None else batch_targets, classes, needed)
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


def _check_class_targets(
    bundle: DataBundle, first_targets: torch.Tensor, classes: int, needed: int
) -> None:
    """Negative class targets, and a few stray ones beyond the model's classes, in every
    split held as tensors (the first batch of a training DataLoader)."""
    targets = datacheck.class_targets(bundle)
    if not isinstance(bundle.train, TensorSplit):
        targets.insert(0, (datacheck.FIRST_BATCH, first_targets))
    valid = f"0..{classes - 1}" if classes > 1 else "0"
    negative = datacheck.negative_targets(targets)
    if negative:
        described = "; ".join(f.describe() for f in negative)
        it = "them" if sum(f.count for f in negative) > 1 else "it"
        raise UserError(
            f"{described}: cross-entropy needs class labels {valid} (or {datacheck.IGNORE_INDEX} "
            f"for a target to ignore); fix or drop {it}"
        )
    if classes >= needed:
        return
    beyond = datacheck.targets_beyond(targets, classes)
    if not beyond or not datacheck.look_like_strays(targets, classes):
        return  # many targets beyond: the model lacks classes, as the caller says
    described = "; ".join(f.describe() for f in beyond)
    one = sum(f.count for f in beyond) == 1
    top = max(v for f in beyond for v in f.values)
    raise UserError(
        f"{described}, beyond the model's {classes} classes ({valid}): "
        f"{'that label looks' if one else 'those labels look'} wrong, fix or drop "
        f"{'it' if one else 'them'} (if {top} is a real class, give the model's last layer "
        f"{top + 1} outputs)"
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

    The data is checked too (the splits held as tensors, whole, one vectorised pass per
    tensor): class targets that cross-entropy cannot take, every split's input shape
    against the training inputs' (see `_check_splits`), and NaN or inf in the inputs
    (and in float targets, for the built-in losses).

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
    batch_y: torch.Tensor | None = None  # a training DataLoader's first batch of targets
    if isinstance(bundle.train, TensorSplit):
        # the whole split's scale is read with its NaN check (_check_splits)
        x, y = bundle.train.x[:CHECK_SAMPLES], bundle.train.y[:CHECK_SAMPLES]
    else:
        x, batch_y = first_batch(bundle.train, "train")
        scale = datacheck.raw_scale(datacheck.value_ends(x))
        if scale is not None:
            warnings.append(scale)
        x, y = x[:CHECK_SAMPLES], batch_y[:CHECK_SAMPLES]
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
        output = select_output(raw, output_key, bundle.num_classes)
        if output.dim() == 0 or output.shape[0] != x.shape[0]:
            rows = "a single number" if output.dim() == 0 else f"{output.shape[0]} rows"
            raise UserError(
                f"the model outputs {rows} for a batch of {x.shape[0]} samples (output shape "
                f"{_shape(output)}): keep the batch dimension first (a view(-1, ...) with a "
                f"wrong size folds it)"
            )
        if loss_name == "cross-entropy":
            _check_cross_entropy(output, y, bundle, warnings, batch_y)
        elif loss_name in _ELEMENTWISE:
            _check_elementwise(output, y, loss_name)
        if fn is not None:
            _check_loss(fn, loss_name, output, y, model, warnings)
        _check_splits(model, bundle, loss_name, fn, output_key, device, warnings)
    return warnings


# ------------------------------------------------------------- every split, whole


def _forward(
    model: nn.Module, x: torch.Tensor, output_key: str | None, device: torch.device | None
) -> torch.Tensor:
    if device is not None:
        x = x.to(device)
    with torch.no_grad():
        return select_output(model(x), output_key)


def _at_least_two(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-sample batch repeated, so BatchNorm in training mode takes it."""
    if x.shape[0] >= CHECK_SAMPLES:
        return x, y
    index = torch.zeros(CHECK_SAMPLES, dtype=torch.long, device=x.device)
    return x.index_select(0, index), y.index_select(0, index.to(y.device))


def _check_splits(
    model: nn.Module,
    bundle: DataBundle,
    loss_name: str,
    fn: LossFn | None,
    output_key: str | None,
    device: torch.device | None,
    warnings: list[str],
) -> None:
    """Every split's input shape against the training inputs', NaN/inf anywhere, and
    (into `warnings`) training inputs far from order 1.

    A split whose per-sample shape differs from the training inputs' is an error only
    where the model (or the loss) fails on two of its samples: a model that flattens or
    pools adaptively takes other shapes. NaN or inf in the inputs is an error unless the
    model's output on those samples is finite (a model that masks missing values);
    non-finite float targets are an error for the built-in losses (a loss of your own
    may mask them). Splits read batch by batch are checked on their first inputs only,
    where that is cheap (datacheck.first_inputs), and not for NaN.
    """
    train_shape = tuple(bundle.input_shape)
    for which, split in datacheck.named_splits(bundle):
        label = datacheck.SPLIT_LABELS[which]
        if which != "train":
            first = datacheck.first_inputs(split, CHECK_SAMPLES)
            if first is not None and datacheck.sample_shape(first[0]) != train_shape:
                _check_other_shape(model, first, label, train_shape, fn, output_key, device)
        if not isinstance(split, TensorSplit):
            continue
        ends = datacheck.value_ends(split.x)  # one aminmax for the NaN check and the scale
        bad = datacheck.find_non_finite(split.x, ends)
        if bad is not None and not _tolerates(model, split.x, bad, output_key, device):
            raise UserError(bad.message(which, "inputs"))
        scale = datacheck.raw_scale(ends) if which == "train" else None
        if scale is not None:
            warnings.append(scale)
        if loss_name in LOSSES and split.y.is_floating_point():
            bad = datacheck.find_non_finite(split.y)
            if bad is not None:
                raise UserError(bad.message(which, "targets"))


def _check_other_shape(
    model: nn.Module,
    first: tuple[torch.Tensor, torch.Tensor],
    label: str,
    train_shape: tuple[int, ...],
    fn: LossFn | None,
    output_key: str | None,
    device: torch.device | None,
) -> None:
    x, y = _at_least_two(*first)
    try:
        output = _forward(model, x, output_key, device)
        if fn is not None:
            with torch.no_grad():
                fn(output, y.to(output.device))
    except Exception as exc:
        raise UserError(
            f"the {label} inputs have shape {_shape(x.shape[1:])} but the training inputs "
            f"{_shape(train_shape)}, and the model fails on them "
            f"({one_line(describe_exception(exc), 300)}): give every split inputs of the "
            f"training shape"
        ) from exc


def _tolerates(
    model: nn.Module,
    x: torch.Tensor,
    bad: datacheck.NonFinite,
    output_key: str | None,
    device: torch.device | None,
) -> bool:
    """Whether the model's output on the first non-finite samples is finite."""
    picked = bad.samples[:CHECK_SAMPLES].to(x.device)
    if picked.numel() < CHECK_SAMPLES:
        picked = picked.repeat(CHECK_SAMPLES)[:CHECK_SAMPLES]
    try:
        output = _forward(model, x.index_select(0, picked), output_key, device)
    except Exception:
        return False
    return bool(torch.isfinite(output).all())


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
        what = (f"a tensor of shape {_shape(loss)}" if isinstance(loss, torch.Tensor)
                else f"a {type(loss).__name__}")
        raise UserError(
            f"the loss {loss_name} returned {what}: it must return one tensor holding a single "
            "number that depends on the model's output (reduce it, e.g. .mean())"
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
