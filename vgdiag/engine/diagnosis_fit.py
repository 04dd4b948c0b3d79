"""Whether what the model learned carries over to data it did not train on."""

from __future__ import annotations

import math
from collections.abc import Sequence

from vgdiag.engine.records import EpochRecord, Finding
from vgdiag.engine.thresholds import Thresholds

MEMORISING = "memorising"
# The training loss this far under ln(classes) says the training set was learned.
TRAIN_FITTED = 0.5
# A validation accuracy within this share of the way from chance to 1 is guessing.
NEAR_CHANCE = 0.1


def memorising(epochs: Sequence[EpochRecord], num_classes: int, t: Thresholds
               ) -> list[Finding]:
    """The training loss fell far below chance while the validation loss is no better
    than guessing: the model memorises the training samples (random labels can only
    be memorised), which no gradient finding says."""
    if num_classes < 2 or len(epochs) < 2:
        return []
    last = epochs[-1]
    chance = math.log(num_classes)
    if not (math.isfinite(last.val_loss) and math.isfinite(last.train_loss)):
        return []
    if last.train_loss > TRAIN_FITTED * chance or last.val_loss < chance * (1 - t.stall_tolerance):
        return []
    guess = 1.0 / num_classes
    if math.isfinite(last.val_acc) and last.val_acc > guess + NEAR_CHANCE * (1 - guess):
        return []  # right on new data, only overconfident where wrong: overfitting
    acc = (f", val acc {last.val_acc:.3g} against {1 / num_classes:.3g} by guessing"
           if math.isfinite(last.val_acc) else "")
    return [Finding(
        MEMORISING, "warning", [],
        {"train_loss": last.train_loss, "val_loss": last.val_loss, "ln_classes": chance,
         "val_acc": last.val_acc, "epoch": last.epoch},
        f"The model fits the training data (train loss {last.train_loss:.4g}) but not the "
        f"validation data (val loss {last.val_loss:.4g}, no better than ln({num_classes}) = "
        f"{chance:.4f}{acc}): it memorises the training samples. Check that the labels "
        "belong to the inputs (random or shuffled labels can only be memorised) and that "
        "the validation split is drawn like the training one; otherwise regularise or "
        "train on more data.")]
