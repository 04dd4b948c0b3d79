"""vgdiag for Hugging Face transformers: a TrainerCallback that writes a run folder.

    from vgdiag.integrations.transformers import VgdiagCallback

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[VgdiagCallback("runs/hf", num_classes=2)])
    trainer.train()
    # vgdiag report runs/hf   |   vgdiag view runs/hf

The Trainer steps an optimizer wrapped by accelerate, so the callback marks each
update from the Trainer's own events (on_pre_optimizer_step: gradients accumulated and
clipped; on_optimizer_step: after the update). The step's loss is the `loss` the
model returns: the mean of its micro-batches' where each is a mean, their sum where
the Trainer passes `num_items_in_batch` and the model's loss divides by it (then each
is its share of a sum over the whole accumulated batch). A model whose forward takes
`**kwargs` but computes its loss itself (BERT's classifiers call CrossEntropyLoss())
returns a mean whatever the Trainer passes: its losses are means, and under gradient
accumulation a warning says that the Trainer then sums their gradients. An epoch's
evaluation (eval_loss, eval_accuracy) comes after its on_epoch_end, so each epoch is
written when the next one starts or training ends.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as exc:  # pragma: no cover - the extra is absent
    raise ImportError(
        "vgdiag.integrations.transformers needs transformers: "
        "pip install 'vgdiag[transformers]'"
    ) from exc

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from vgdiag.engine.watch import Watch
from vgdiag.integrations.common import CallbackWatch, WatchSettings, first_metric, scalar

if TYPE_CHECKING:
    from typing_extensions import Unpack  # in typing from Python 3.11

# The Trainer prefixes evaluation metrics with "eval_"; compute_metrics names the rest.
EVAL_LOSS = ("eval_loss",)
EVAL_ACC = ("eval_accuracy", "eval_acc")


class VgdiagCallback(TrainerCallback):
    """Record per-layer gradient statistics of a Trainer's model into a run folder.

    Args:
        out: the run folder [default: runs/<timestamp>-<name>]; must be new or empty.
        num_classes: for classification, lets the diagnosis spot a loss stuck at
            ln(num_classes) [default: the model config's num_labels, if any].
        **settings: name [default: the model's class name], every (sample every N-th
            optimizer step), hist_every (histograms on every N-th sampled step, 0: none):
            see `vgdiag.integrations.common.WatchSettings`.
    """

    def __init__(self, out: str | Path | None = None, *, num_classes: int | None = None,
                 **settings: Unpack[WatchSettings]) -> None:
        self._run = CallbackWatch(out, **settings)
        self.num_classes = num_classes
        self._hook: RemovableHandle | None = None
        self._logged: list[float] = []  # "loss" log entries of the epoch in progress
        self._pending = False  # an epoch ended; its evaluation may still come
        self._eval: dict[str, float] = {}
        # The loss shares of the step in progress, where the Trainer passes
        # num_items_in_batch (each micro-batch's loss is then its part of a sum).
        self._share: torch.Tensor | None = None
        self._share_scale = 1
        self._divides = True  # whether the model's loss divides by num_items_in_batch
        self._accumulates = False  # gradient accumulation over more than one micro-batch
        self._warned = False

    @property
    def watch(self) -> Watch | None:
        """The Watch of the run in progress (None before training starts)."""
        return self._run.watch

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, model: nn.Module | None = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if model is None:
            return
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        classes = self.num_classes if self.num_classes is not None else classes_of(model)
        epochs = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else 0
        steps = state.max_steps // epochs if epochs and state.max_steps > 0 else 0
        self._run.start(
            model, inner if isinstance(inner, torch.optim.Optimizer) else None,
            num_classes=classes,
            hparams={"lr": args.learning_rate, "batch_size": args.per_device_train_batch_size,
                     "seed": args.seed,
                     "gradient_accumulation_steps": args.gradient_accumulation_steps,
                     "max_grad_norm": args.max_grad_norm},
            total_epochs=epochs, steps_per_epoch=steps, source="transformers",
            scaler=getattr(optimizer, "scaler", None),  # accelerate's, under fp16
        )
        # Under several processes the Trainer counts num_items_in_batch over all of
        # them (average_tokens_across_devices) and scales the loss by their number
        # after the model returns it: the shares seen here are that much too small.
        ranks = int(getattr(args, "world_size", 1) or 1)
        self._share_scale = ranks if getattr(args, "average_tokens_across_devices",
                                             False) and ranks > 1 else 1
        self._divides = loss_divides_by_items(model)
        # With one micro-batch per step the sum of their losses is their mean: no warning.
        self._accumulates = int(args.gradient_accumulation_steps or 1) > 1
        self._hook = model.register_forward_hook(self._loss_of, with_kwargs=True)

    def _loss_of(self, module: nn.Module, args: Any, kwargs: dict[str, Any],
                 output: Any) -> None:
        if self.watch is None or not (module.training and torch.is_grad_enabled()):
            return  # evaluation passes are not training steps
        loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss",
                                                                              None)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1):
            return
        if kwargs.get("num_items_in_batch") is not None and not self._divides \
                and self._accumulates:
            self._warn_summed(module)
        if kwargs.get("num_items_in_batch") is None or not self._divides:
            self.watch.observe_loss(loss)  # a mean: the step's and epoch's average them
        else:  # a share of the accumulated batch's sum: the shares add up to its mean
            share = loss.detach().reshape(()) * self._share_scale
            self._share = share if self._share is None else self._share + share

    def _warn_summed(self, module: nn.Module) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(
            f"vgdiag: {type(module).__name__} takes **kwargs, so the Trainer passes it "
            "num_items_in_batch and does not divide its loss for gradient accumulation, but "
            "its loss ignores num_items_in_batch (a mean per micro-batch): the Trainer's "
            "gradients and logged loss are the sum over the micro-batches. vgdiag records "
            "their mean; give the Trainer compute_loss_func, or set "
            "model.accepts_loss_kwargs = False, for mean gradients", stacklevel=2)

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                              control: TrainerControl, **kwargs: Any) -> None:
        if self._share is not None and self.watch is not None:
            self.watch.observe_loss(self._share)
        self._share = None
        self._run.before_update()

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState,
                          control: TrainerControl, **kwargs: Any) -> None:
        self._run.after_update()

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        value = scalar((logs or {}).get("loss"))
        if value is not None:  # a log after on_epoch_end still covers that epoch
            self._logged.append(value)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        self._eval = dict(metrics or {})

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        self._end_epoch()

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        self._pending = True

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        self._end_epoch()
        self.close()

    def close(self, error: BaseException | None = None) -> None:
        """End the run (on_train_end does); call it with the exception if train() raised."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._run.close(error)

    def _end_epoch(self) -> None:
        if not self._pending or self.watch is None:
            return
        self._pending = False
        # The model's own losses (watch's mean) when it returned any, else the log's.
        observed = self.watch.observed_losses
        logged = sum(self._logged) / len(self._logged) if self._logged else None
        self.watch.observe_epoch(
            train_loss=None if observed else logged,
            val_loss=first_metric(self._eval, EVAL_LOSS),
            val_acc=first_metric(self._eval, EVAL_ACC),
        )
        self._logged, self._eval = [], {}


def loss_divides_by_items(model: nn.Module) -> bool:
    """Whether the model's own loss uses num_items_in_batch. transformers' heads that
    compute it with `self.loss_function(..., **kwargs)` use it where that function takes
    it (the causal LM loss does, the sequence classification loss does not); heads that
    call a torch loss themselves (BERT's) return a mean. Unknown: assumed to."""
    inner = getattr(model, "module", model)  # DDP's wrapper
    base = getattr(inner, "get_base_model", None)  # PEFT: the model it wraps
    if callable(base):
        inner = base()
    try:
        source = inspect.getsource(type(inner).forward)
    except (OSError, TypeError):
        return True
    if "num_items_in_batch" in source:
        return True
    if "loss_function" not in source:
        return False
    loss_fn = getattr(inner, "loss_function", None)
    if not callable(loss_fn):
        return True
    try:
        return "num_items_in_batch" in inspect.signature(loss_fn).parameters
    except (TypeError, ValueError):
        return True


# Model classes whose config.num_labels is the number of classes of their loss; a
# language model's classes are its vocabulary (a uniform guess costs ln(vocab_size)).
_LABEL_HEADS = ("ForSequenceClassification", "ForTokenClassification",
                "ForImageClassification", "ForAudioClassification")
_VOCAB_HEADS = ("LMHeadModel", "ForCausalLM", "ForMaskedLM", "ForConditionalGeneration")


def classes_of(model: nn.Module) -> int:
    """The classes of a transformers model's loss, for the stalled-loss finding: its
    config's num_labels for a classification head (num_labels defaults to 2 on every
    config, so it says nothing elsewhere), vocab_size for a language model, else 0."""
    config = getattr(model, "config", None)
    kind = type(model).__name__
    if kind.endswith(_LABEL_HEADS):
        return int(getattr(config, "num_labels", 0) or 0)
    if kind.endswith(_VOCAB_HEADS):
        return int(getattr(config, "vocab_size", 0) or 0)
    return 0
