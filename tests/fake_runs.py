"""Run folders from fixed numbers: the event stream of a made-up run, no training, no clock.

Used by the dashboard's snapshot tests (pictures that are the same on any machine)
and by the follow tests, whose writer process replays these events into a folder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vgdiag.engine.events import (
    EpochEnded,
    Event,
    RunFinished,
    RunStarted,
    StageStarted,
    StepSampled,
)
from vgdiag.engine.records import EpochRecord, Finding, Histogram, LayerInfo, LayerStats, StepRecord
from vgdiag.runs.store import RunStore

STEPS_PER_EPOCH = 50
EPOCHS = 4
SAMPLE_EVERY = 10
HIST_STEPS = (0, 100, 190)


def layers(depth: int = 7, batchnorm: bool = False) -> list[LayerInfo]:
    """`depth` hidden Linear+Sigmoid layers and an output Linear, named as nn.Sequential does.

    With `batchnorm`, each hidden Linear is wrapped with a BatchNorm1d after it, as
    the batchnorm fix does: `net.1` becomes `net.1.0` and `net.1.1` is new.
    """
    out: list[LayerInfo] = []
    index = 1
    for _ in range(depth):
        if batchnorm:  # nn.Sequential(Linear, BatchNorm1d) where the Linear was
            out.append(LayerInfo(f"net.{index}.0", "Linear", len(out), 4160,
                                 ("weight", "bias"), None, 64))
            out.append(LayerInfo(f"net.{index}.1", "BatchNorm1d", len(out), 128,
                                 ("weight", "bias"), "Sigmoid", 0))
        else:
            out.append(LayerInfo(f"net.{index}", "Linear", len(out), 4160,
                                 ("weight", "bias"), "Sigmoid", 64))
        index += 2
    out.append(LayerInfo(f"net.{index}", "Linear", len(out), 650, ("weight", "bias"), None, 64))
    return out


def _hist(lo: float, hi: float, centre: float, width: float, bins: int = 40) -> Histogram:
    x = np.linspace(lo, hi, bins)
    counts = np.round(1000 * np.exp(-0.5 * ((x - centre) / width) ** 2)).astype(np.int64)
    return Histogram(lo, hi, counts)


def findings(fixed: bool) -> list[Finding]:
    if fixed:
        return []
    return [
        Finding("loss_stalled", "error", [], {"loss": 2.3021, "ln_classes": math.log(10),
                                              "stalled_for": 3},
                "Training has stalled: the loss 2.3021 sits within 1% of ln(10) = 2.3026, "
                "the loss of guessing, for 3 epochs.", ["adam", "weight-init", "relu"]),
        Finding("vanishing_gradient", "error", ["net.1", "net.3"],
                {"ratio_first_last": 2.0e-4, "grad_norm": {"net.1": 6e-5, "net.3": 5e-4,
                                                           "net.5": 4e-3, "net.7": 0.3}},
                "The gradient vanishes toward the input: the first layer gets 0.0002 of the "
                "output layer's gradient norm.", ["weight-init", "relu", "batchnorm", "adam"]),
    ]


def run_events(*, fixed: bool = False, name: str = "mlp-sigmoid-d7", depth: int = 7,
               batchnorm: bool = False, epochs: int = EPOCHS,
               status: str = "completed", recurrent: bool = False) -> Iterator[Event]:
    """A run of `epochs` x 50 steps sampled every 10th: vanishing gradients and a stalled
    loss, or (`fixed`) a healthy one. Ends with RunFinished(`status`). With `recurrent`,
    records carry a gradient-through-time profile of 12 steps fading toward t = 0."""
    infos = layers(depth, batchnorm)
    decay = 0.9 if fixed else 8.0  # gradient divided by this per layer toward the input
    total = STEPS_PER_EPOCH * epochs
    yield RunStarted({
        "device": "cpu",
        "experiment": {"name": name, "model": f"builtin:mlp depth={depth} width=64 "
                       f"activation={'relu' if fixed else 'sigmoid'}", "plugins": []},
        "data": {"name": "digits", "num_classes": 10},
        "stages": [{"name": "train", "epochs": epochs}],
        "steps_per_epoch": STEPS_PER_EPOCH,
    }, STEPS_PER_EPOCH, epochs)
    yield StageStarted(0, "train", epochs, [i.name for i in infos])
    loss = acc = 0.0
    for step in range(0, total, SAMPLE_EVERY):
        t = step / total
        out = 0.3 * (1.0 - 0.5 * t)
        stats = {}
        for info in infos:
            from_out = len(infos) - 1 - info.depth
            g = out / decay ** from_out * (1.0 + 0.1 * math.sin(step / 7 + info.depth))
            stats[info.name] = LayerStats(
                grad_norm=g, grad_mean_abs=g / 40, weight_norm=2.0 + t * 0.1,
                weight_change=0.05 * t / decay ** from_out, update_ratio=g * 3e-3,
                act_mean=0.5 + 0.02 * info.depth * (1 - t), act_std=0.05 + 0.1 * t,
                act_saturated=0.0 if fixed else 0.2 + 0.05 * info.depth * (0.5 + t),
                act_dead=0.1 if fixed else math.nan)
        hist_step = step in HIST_STEPS
        weight_hist = {
            i.name: _hist(-0.3, 0.3, 0.0, 0.06 + 0.04 * t * (2 if fixed else 0.2))
            for i in infos
        } if hist_step else {}
        grad_hist = {
            i.name: _hist(-16.0, 4.0, -4.0 - 0.5 * (len(infos) - 1 - i.depth)
                          * (0.3 if fixed else 1.0), 1.0)
            for i in infos
        } if hist_step else {}
        loss = (2.31 - 1.5 * t) if fixed else 2.305 - 0.003 * t
        record = StepRecord(step, step // STEPS_PER_EPOCH + 1, loss, stats, weight_hist,
                            grad_hist)
        if recurrent:
            record.time_grad = {"rnn": [0.05 * 0.5 ** (11 - t) for t in range(12)]}
        yield StepSampled(record, infos, step + 1, step / 100)
        if (step + SAMPLE_EVERY) % STEPS_PER_EPOCH == 0:
            epoch = (step + SAMPLE_EVERY) // STEPS_PER_EPOCH
            e = epoch / epochs
            acc = 0.1 + (0.8 * e if fixed else 0.01 * e)
            yield EpochEnded(EpochRecord(epoch, loss + 0.01, acc, loss, acc + 0.02, 0.5,
                                         epoch * STEPS_PER_EPOCH, "train"), findings(fixed))
    yield RunFinished(status, infos, {"loss": loss, "acc": acc}, findings(fixed), 2.0, total)


def write_run(folder: Path, **kwargs: object) -> Path:
    """The whole of `run_events(**kwargs)` written through RunStore into `folder`."""
    with RunStore(folder, name=str(kwargs.get("name", "mlp-sigmoid-d7")), num_classes=10) as s:
        for event in run_events(**kwargs):  # type: ignore[arg-type]
            s.handle(event)
    return folder
