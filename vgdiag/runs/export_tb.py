"""A run folder as TensorBoard event files, for people who live in TensorBoard.

Written with TensorBoard's own event writer (through torch.utils.tensorboard, which
needs the `tensorboard` package: `pip install 'vgdiag[tensorboard]'`). Tags:

- `<stat>/<layer>` for every per-layer statistic of the probe (grad_norm,
  update_ratio, weight_change, act_saturated, ...) at each sampled step; a value
  the probe did not measure (NaN) is left out, not written as a number.
- `loss/train_step` (the sampled steps' losses), `loss/train`, `loss/val`,
  `accuracy/train`, `accuracy/val` at the step each epoch ended, `loss/test` and
  `accuracy/test` at the last step.
- histograms `weights/<layer>` and `log10_abs_grad/<layer>` on histogram steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vgdiag.engine.records import LAYER_STAT_KEYS, Histogram
from vgdiag.errors import UserError
from vgdiag.runs.reader import RunData

EVENT_FILE_PREFIX = "events.out.tfevents."
EPOCH_TAGS = (("train_loss", "loss/train"), ("val_loss", "loss/val"),
              ("train_acc", "accuracy/train"), ("val_acc", "accuracy/val"))
HIST_TAGS = (("weight_hist", "weights"), ("grad_hist", "log10_abs_grad"))


@dataclass
class Exported:
    """What an export wrote."""

    log_dir: Path
    scalars: int  # scalar points
    series: int  # distinct scalar tags
    histograms: int  # histogram points


def export_tensorboard(run: RunData, log_dir: Path) -> Exported:
    """Write `run` as event files into `log_dir` (new, or without event files)."""
    writer_class = _summary_writer()
    log_dir = Path(log_dir)
    if log_dir.exists() and not log_dir.is_dir():
        raise UserError(f"--tensorboard {log_dir} is a file: give a folder for the event files")
    if log_dir.is_dir() and any(p.name.startswith(EVENT_FILE_PREFIX) for p in log_dir.iterdir()):
        raise UserError(f"--tensorboard {log_dir} already holds TensorBoard event files: "
                        "give a new folder (TensorBoard would show both as one run)")
    try:
        writer = writer_class(log_dir=str(log_dir))
    except OSError as exc:
        raise UserError(f"cannot write to --tensorboard {log_dir}: "
                        f"{exc.strerror or exc}") from None
    tags: set[str] = set()
    points = hists = 0

    def scalar(tag: str, value: float, step: int) -> None:
        nonlocal points
        if math.isfinite(value):
            writer.add_scalar(tag, value, step)
            tags.add(tag)
            points += 1

    try:
        for record in run.records:
            scalar("loss/train_step", record.loss, record.step)
            for layer, stats in record.layers.items():
                for key in LAYER_STAT_KEYS:
                    scalar(f"{key}/{layer}", float(getattr(stats, key)), record.step)
            for attr, prefix in HIST_TAGS:
                for layer, hist in getattr(record, attr).items():
                    if _add_histogram(writer, f"{prefix}/{layer}", hist, record.step):
                        hists += 1
        for epoch in run.epochs:
            for attr, tag in EPOCH_TAGS:
                scalar(tag, getattr(epoch, attr), epoch.steps)
        test = run.summary.get("test") or {}
        last = int(run.summary.get("steps") or 0)
        for key, tag in (("loss", "loss/test"), ("acc", "accuracy/test")):
            if isinstance(test.get(key), int | float):
                scalar(tag, float(test[key]), last)
        writer.add_text("vgdiag/verdict", f"{run.status}: {run.summary.get('verdict', '')}", last)
    finally:
        writer.close()
    return Exported(log_dir, points, len(tags), hists)


def _add_histogram(writer: Any, tag: str, hist: Histogram, step: int) -> bool:
    counts = np.asarray(hist.counts, dtype=np.float64)
    total = float(counts.sum())
    if total == 0 or not (math.isfinite(hist.lo) and math.isfinite(hist.hi)):
        return False
    # The bins from the first to the last that hold a value: TensorBoard draws the
    # range it is given, and log10|grad|'s fixed range (-16..4) would dwarf the data.
    occupied = np.flatnonzero(counts)
    first, last = int(occupied[0]), int(occupied[-1])
    counts = counts[first:last + 1]
    edges = hist.edges()[first:last + 2]
    centres = (edges[:-1] + edges[1:]) / 2
    # The folder keeps counts per bin, not the values: the sums TensorBoard's format
    # asks for are taken at the bin centres (they only feed its mean and spread), and
    # min and max are the edges of the occupied bins.
    writer.add_histogram_raw(
        tag, min=float(edges[0]), max=float(edges[-1]), num=total,
        sum=float((centres * counts).sum()), sum_squares=float((centres**2 * counts).sum()),
        bucket_limits=edges[1:].tolist(), bucket_counts=counts.tolist(), global_step=step,
    )
    return True


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("the TensorBoard export needs the tensorboard package: "
                        "pip install 'vgdiag[tensorboard]'") from None
    return SummaryWriter
