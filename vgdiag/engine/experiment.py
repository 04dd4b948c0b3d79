"""Experiment: a plain, declarative recipe for one training run.

Plugins transform recipes (Experiment -> Experiment); the trainer runs them. Nothing
here trains or touches data: factories are called by the trainer, after seeding, so
the baseline and every variant start from the same random state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vgdiag.engine.defaults import (
    DEFAULT_EVERY,
    DEFAULT_HIST_EVERY,
    MIN_SAMPLED_STEPS,
    Optimizer,
)

ModelFactory = Callable[[], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sampling_every(every: int, total_steps: int, min_samples: int = MIN_SAMPLED_STEPS) -> int:
    """The probe's interval: the default one shortened so a run gets `min_samples` samples.

    Another `every` is the user's choice and is kept as given.
    """
    if every != DEFAULT_EVERY or min_samples <= 0 or total_steps <= 0:
        return every
    return max(1, min(every, total_steps // min_samples))


def watch_sampling(total_steps: int) -> dict[str, int]:
    """A watched loop's default sampling: `vgdiag run`'s where its length is known
    (sampling_every); else every 25th step and each of the first MIN_SAMPLED_STEPS,
    so that a short loop of unknown length is still diagnosed on enough samples."""
    if total_steps > 0:
        return {"every": sampling_every(DEFAULT_EVERY, total_steps)}
    return {"every": DEFAULT_EVERY, "sample_first": MIN_SAMPLED_STEPS}


@dataclass
class TrainConfig:
    epochs: int = 30  # passes over the training set (over all stages)
    batch_size: int = 64  # samples per optimizer step
    lr: float = 0.01  # learning rate of the default optimizer
    seed: int = 42  # seeds model init, data order and the data split
    device: str = "cpu"  # resolved device: "cpu", "cuda", "cuda:1"...
    every: int = DEFAULT_EVERY  # probe samples every N-th optimizer step (step 0 always)
    min_samples: int = MIN_SAMPLED_STEPS  # at the default every, a short run samples this many
    hist_every: int = DEFAULT_HIST_EVERY  # histograms on every N-th *sampled* step
    keep_going: bool = False  # go on training after a non-finite loss or gradient
    threads: int = 0  # PyTorch CPU threads; 0 = automatic (see devices.SMALL_MODEL_PARAMS)


@dataclass
class Stage:
    """One stage of a staged schedule (layer-wise training).

    The stage trains `model` (which may share submodules with earlier stages) and
    updates only `trainable` (None: every parameter of `model`).
    """

    name: str
    epochs: int
    model: nn.Module
    trainable: list[nn.Parameter] | None = None
    batch_size: int | None = None  # overrides TrainConfig.batch_size when set


# Given the model built by model_factory, returns the stages to train in order.
StagePlan = Callable[[nn.Module], list[Stage]]


@dataclass
class Experiment:
    name: str  # short name, used in run folder names and tables
    model_factory: ModelFactory
    optimizer_factory: OptimizerFactory
    loss_fn: LossFn
    train: TrainConfig
    model_spec: str = "builtin:mlp"  # how the model was named by the user (for config.json)
    input_shape: tuple[int, ...] | None = None  # one sample's shape, for dry forwards
    num_classes: int = 0  # classes of the task (0: not a classification task)
    output_key: str | None = None  # which item of a dict/tuple output is the prediction
    optimizer_name: str = "sgd"  # for config.json and tables
    stage_plan: StagePlan | None = None  # None: one stage, all parameters, train.epochs
    model_transforms: list[Callable[[nn.Module], nn.Module]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)  # names of plugins applied, in order
    notes: dict[str, Any] = field(default_factory=dict)  # JSON-able facts plugins add
    # The options the front end built it from, as it would read them back (the CLI: a
    # recipe), for config.json: what it takes to run it again.
    recipe: dict[str, Any] = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        """Build the model and apply every transform plugins added, in order."""
        model = self.model_factory()
        for transform in self.model_transforms:
            model = transform(model)
        return model

    def replace(self, **changes: Any) -> Experiment:
        """A copy with some fields changed; list fields are copied, never shared."""
        base: dict[str, Any] = {
            "model_transforms": list(self.model_transforms),
            "plugins": list(self.plugins),
            "notes": dict(self.notes),
            "train": dataclasses.replace(self.train),
        }
        base.update(changes)
        return dataclasses.replace(self, **base)

    def describe(self) -> dict[str, Any]:
        """JSON-able description for config.json."""
        return {
            "name": self.name,
            "model": self.model_spec,
            "optimizer": self.optimizer_name,
            "plugins": list(self.plugins),
            "staged": self.stage_plan is not None,
            "train": dataclasses.asdict(self.train),
            "notes": dict(self.notes),
            **({"recipe": dict(self.recipe)} if self.recipe else {}),
        }


def sgd(lr: float, momentum: float = 0.0) -> OptimizerFactory:
    """Plain SGD, as in the reference experiment (no momentum by default)."""

    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=momentum)

    return make


def adam(lr: float) -> OptimizerFactory:
    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)

    return make


OPTIMIZERS: dict[str, Callable[[float], OptimizerFactory]] = {
    Optimizer.sgd: sgd,
    Optimizer.adam: adam,
}
