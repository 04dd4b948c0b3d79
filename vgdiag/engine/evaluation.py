"""A model's per-sample mean loss and accuracy over a whole split (no backward)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vgdiag.engine.distributed import DataParallel
from vgdiag.engine.experiment import LossFn
from vgdiag.engine.splits import Split

EVAL_BATCH = 2048  # evaluation has no backward: larger batches are cheaper


def prediction(output: Any, key: str | None) -> torch.Tensor:
    """The tensor the loss reads from a model's output (`--output-key`)."""
    if isinstance(output, torch.Tensor) and key is None:
        return output
    from vgdiag.engine.outputs import select_output

    return select_output(output, key)


@dataclass(frozen=True)
class Evaluator:
    """How a run evaluates: its loss, output key, batch size, device and ranks."""

    loss_fn: LossFn
    output_key: str | None
    classify: bool  # accuracy is NaN for a regression
    batch_size: int  # the training batch size; evaluation uses at least EVAL_BATCH
    device: torch.device
    parallel: DataParallel | None = None  # under torchrun: each rank its slice

    @torch.no_grad()
    def __call__(self, model: nn.Module, split: Split) -> tuple[float, float]:
        """Per-sample mean loss and accuracy of `model` over `split` (NaN if empty)."""
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        nan_out = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = 0
        for x, y in split.batches(max(EVAL_BATCH, self.batch_size)):
            weight = 1.0
            if self.parallel:  # each rank its slice; the sums are added below
                x, y, weight = self.parallel.shard(x, y)
            out = prediction(model(x), self.output_key)
            n = int(y.shape[0]) if weight else 0
            if n:
                loss_sum += self.loss_fn(out, y).reshape(()).double() * n
                if self.classify:
                    correct += (out.argmax(dim=1) == y).sum()
                    nan_out += torch.isnan(out).any()
            seen += n
        model.train(was_training)
        if self.parallel:
            loss_sum, correct, nan_out, total = self.parallel.all_sum(
                [loss_sum, correct, nan_out, torch.tensor(float(seen), device=self.device)])
            seen = int(total)
        if seen == 0:
            return math.nan, math.nan
        loss = float(loss_sum) / seen
        return loss, accuracy(int(correct), seen, loss, self.classify, bool(int(nan_out)))


def accuracy(correct: int, seen: int, loss: float, classify: bool,
             nan_outputs: bool = False) -> float:
    """correct / seen, or NaN (shown as -, JSON null) where there is no accuracy.

    argmax of NaN (or overflowed) logits is a constant class, not a prediction: a
    pass with NaN outputs or a non-finite loss has no accuracy, and a regression has
    none. -inf logits that mask classes leave the loss finite and keep it.
    """
    if not classify or nan_outputs or not math.isfinite(loss) or seen <= 0:
        return math.nan
    return correct / seen
