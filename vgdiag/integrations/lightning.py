"""vgdiag for Lightning: a Callback that writes a run folder.

    from vgdiag.integrations.lightning import VgdiagCallback

    trainer = L.Trainer(max_epochs=10, callbacks=[VgdiagCallback("runs/lit", num_classes=10)])
    trainer.fit(model, train_loader, val_loader)
    # vgdiag report runs/lit   |   vgdiag view runs/lit

Lightning's automatic optimization runs forward and backward inside
optimizer.step(closure), after the optimizer's own step hooks have fired, so the
callback marks each update from Lightning's hooks instead: on_before_optimizer_step
(gradients complete, before clipping and the update) and on_train_batch_end (after
it). The training loss is the one training_step returns; validation numbers are read
from what the module logs (`self.log("val_loss", ...)`, `"val_acc"`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - the extra is absent
    raise ImportError(
        "vgdiag.integrations.lightning needs Lightning: pip install 'vgdiag[lightning]'"
    ) from exc

from vgdiag.engine.watch import Watch
from vgdiag.integrations.common import (
    CallbackWatch,
    WatchSettings,
    batch_size_of,
    first_metric,
    plain_hparams,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack  # in typing from Python 3.11

# Names under which modules commonly log their epoch numbers; `metrics=` overrides.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "train_acc": ("train_acc", "train_accuracy", "train/acc", "train/accuracy"),
    "val_loss": ("val_loss", "val/loss", "valid_loss"),
    "val_acc": ("val_acc", "val_accuracy", "val/acc", "val/accuracy", "valid_acc"),
}


class VgdiagCallback(pl.Callback):
    """Record per-layer gradient statistics of a LightningModule into a run folder.

    Args:
        out: the run folder [default: runs/<timestamp>-<name>]; must be new or empty.
        num_classes: for classification, lets the diagnosis spot a loss stuck at
            ln(num_classes).
        metrics: logged metric names to read per epoch, e.g. {"val_acc": "val/top1"};
            keys are train_acc, val_loss, val_acc (train_loss is the mean of the
            losses training_step returned unless given here too).
        **settings: name [default: the module's class name], every (sample every N-th
            optimizer step), hist_every (histograms on every N-th sampled step, 0: none):
            see `vgdiag.integrations.common.WatchSettings`.
    """

    def __init__(self, out: str | Path | None = None, *, num_classes: int = 0,
                 metrics: Mapping[str, str] | None = None,
                 **settings: Unpack[WatchSettings]) -> None:
        super().__init__()
        self._run = CallbackWatch(out, **settings)
        self.num_classes = num_classes
        self.metrics = dict(metrics or {})

    @property
    def watch(self) -> Watch | None:
        """The Watch of the run in progress (None before training starts)."""
        return self._run.watch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        if len(trainer.optimizers) > 1:
            # One record per batch: the gradients read at the batch's first optimizer
            # step, the update across all of them (a GAN's discriminator's gradient is
            # then read before, or after, the generator's backward added to it).
            warnings.warn(
                f"vgdiag: {len(trainer.optimizers)} optimizers: each batch is recorded as "
                "one step, its gradients read at the first optimizer step of the batch "
                "and its update across them all, so the layers another optimizer steps "
                "read its gradients as they were then; for one optimizer's steps "
                "exactly, watch its module with vgdiag.watch in training_step",
                stacklevel=2)
        batches = trainer.num_training_batches
        steps = (int(batches) // max(trainer.accumulate_grad_batches, 1)
                 if math.isfinite(batches) else 0)
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 0
        self._run.start(
            pl_module, optimizer, num_classes=self.num_classes,
            hparams={**plain_hparams(pl_module.hparams),
                     "accumulate_grad_batches": trainer.accumulate_grad_batches},
            total_epochs=epochs, steps_per_epoch=steps, source="lightning",
            scaler=getattr(trainer.precision_plugin, "scaler", None),  # 16-mixed's
        )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Any) -> None:
        self._run.before_update()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.watch is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:  # stays on the device
            # Lightning hands back the loss divided for gradient accumulation; its epoch
            # mean weights each batch by its size, and so does this one.
            self.watch.observe_loss(loss * max(trainer.accumulate_grad_batches, 1),
                                    samples=batch_size_of(batch))
        self._run.after_update()  # when the batch ended an accumulation

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.watch is None:
            return
        logged = trainer.callback_metrics
        values = {key: first_metric(logged, (self.metrics[key],) if key in self.metrics
                                    else names)
                  for key, names in METRIC_NAMES.items()}
        train_loss = first_metric(logged, (self.metrics["train_loss"],)) \
            if "train_loss" in self.metrics else None
        self.watch.observe_epoch(train_loss=train_loss, **values)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run.close(None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        # Lightning turns SIGTERM into an exception after the folder's signal handler
        # has marked the run interrupted.
        self._run.close(exception)
