"""From what the user asked for (CLI flags) to an Experiment and its data.

One place turns options into a recipe so that `run`, `inspect`, `compare` and the
dashboard's "apply a fix" build exactly the same baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional

from vgdiag.engine.experiment import (
    DEFAULT_EVERY,
    DEFAULT_HIST_EVERY,
    OPTIMIZERS,
    Experiment,
    TrainConfig,
)
from vgdiag.engine.models import ACTIVATIONS, build_mlp, init_weights, parse_init
from vgdiag.engine.splits import DataBundle
from vgdiag.engine.trainer import resolve_device
from vgdiag.errors import UserError
from vgdiag.inputs.datasets import DATA_DEFAULTS, DATASETS, load_dataset

BUILTIN_MLP = "builtin:mlp"


@dataclass
class RunOptions:
    """Everything `vgdiag run` accepts, with the CLI's defaults."""

    model: str = BUILTIN_MLP  # builtin:mlp | file.py:Name | package.module:Name | model.pt
    model_args: list[str] = field(default_factory=list)  # key=value for the model's factory
    weights: Path | None = None  # state dict loaded onto the model (weights_only)
    trust_pickle: bool = False  # allow a fully pickled model file (runs its code)
    depth: int = 7  # hidden layers of the built-in MLP
    width: int = 128  # units per hidden layer of the built-in MLP
    activation: str = "sigmoid"  # activation of the built-in MLP
    init: str = "default"  # default | normal:STD | xavier | he
    data: str = "digits"  # built-in dataset name or file.py:factory
    data_dir: Path | None = None  # where the MNIST-family files are (or go)
    synthetic_size: int = 6000  # samples of the synthetic dataset
    loss: str = "cross-entropy"  # cross-entropy | mse | file.py:fn
    output_key: str | None = None  # item of a dict/tuple output that is the prediction
    optimizer: str = "sgd"  # sgd | adam
    lr: float | None = None  # default: Adam 1e-3; SGD per dataset (0.01, digits 0.1)
    epochs: int | None = None  # default: per dataset (data.DATA_DEFAULTS)
    batch_size: int | None = None  # default: per dataset
    seed: int = 42
    device: str = "auto"
    every: int = DEFAULT_EVERY
    hist_every: int = DEFAULT_HIST_EVERY
    keep_going: bool = False
    threads: int = 0  # PyTorch CPU threads; 0 = automatic (1 for small models on CPU)
    fsdp: bool = False  # under torchrun: shard with FSDP2 (fully_shard) instead of DDP

    def validate(self) -> None:
        """UserError for values that make no sense, before anything is loaded."""
        checks: list[tuple[bool, str]] = [
            (self.depth >= 1, f"--depth must be at least 1, got {self.depth}"),
            (self.width >= 1, f"--width must be at least 1, got {self.width}"),
            (self.every >= 1, f"--every must be a positive integer, got {self.every}"),
            (self.hist_every >= 0, f"--hist-every must be 0 (off) or more, got {self.hist_every}"),
            (self.epochs is None or self.epochs >= 1,
             f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size is None or self.batch_size >= 1,
             f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or (math.isfinite(self.lr) and self.lr > 0),
             f"--lr must be a positive number, got {self.lr}"),
            (self.threads >= 0,
             f"--threads must be 0 (automatic) or more, got {self.threads}"),
            (self.synthetic_size >= 10,
             f"--synthetic-size must be at least 10, got {self.synthetic_size}"),
            (self.optimizer in OPTIMIZERS,
             f"unknown --optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}"),
            (self.activation in ACTIVATIONS,
             f"unknown --activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        parse_init(self.init)
        if self.data not in DATASETS and ":" not in self.data:
            raise UserError(
                f"unknown --data {self.data!r}: use one of {', '.join(DATASETS)} "
                "or file.py:factory"
            )

    @property
    def is_builtin(self) -> bool:
        return self.model == BUILTIN_MLP

    def name(self) -> str:
        if self.is_builtin:
            return f"mlp-{self.activation}-d{self.depth}"
        return Path(self.model.split(":")[-1]).stem or "model"


def load_data(opts: RunOptions) -> DataBundle:
    if opts.data in DATASETS:
        return load_dataset(
            opts.data, seed=opts.seed, data_dir=opts.data_dir, synthetic_size=opts.synthetic_size
        )
    from vgdiag.inputs.userdata import load_user_data

    return load_user_data(opts.data, seed=opts.seed)


def _loss(opts: RunOptions) -> tuple[Any, str]:
    if opts.loss == "cross-entropy":
        return functional.cross_entropy, "cross-entropy"
    from vgdiag.inputs.losses import resolve_loss

    return resolve_loss(opts.loss)


def build_experiment(opts: RunOptions, data: DataBundle) -> Experiment:
    """The baseline Experiment the options describe, for `data`."""
    opts.validate()
    device = resolve_device(opts.device)
    defaults = DATA_DEFAULTS.get(opts.data, DATA_DEFAULTS["synthetic"])
    lr = opts.lr if opts.lr is not None else (1e-3 if opts.optimizer == "adam" else defaults.sgd_lr)
    train = TrainConfig(
        epochs=opts.epochs or defaults.epochs,
        batch_size=opts.batch_size or defaults.batch_size,
        lr=lr,
        seed=opts.seed,
        device=device,
        every=opts.every,
        hist_every=opts.hist_every,
        keep_going=opts.keep_going,
        threads=opts.threads,
    )
    loss_fn, loss_name = _loss(opts)
    if opts.is_builtin:
        in_features = math.prod(data.input_shape)
        classes = data.num_classes
        if classes < 2:
            raise UserError("the built-in MLP needs a classification dataset (2+ classes)")
        act, depth, width, init = opts.activation, opts.depth, opts.width, opts.init
        build_mlp(in_features, classes, depth, width, act)  # fail now on bad options

        def factory() -> torch.nn.Module:
            return init_weights(build_mlp(in_features, classes, depth, width, act), init, act)

        spec = f"{BUILTIN_MLP} depth={depth} width={width} activation={act} init={init}"
    else:
        from vgdiag.inputs.loading import load_model_factory

        factory, spec = load_model_factory(
            opts.model,
            model_args=opts.model_args,
            trust_pickle=opts.trust_pickle,
            weights=opts.weights,
        )
    return Experiment(
        name=opts.name(),
        model_factory=factory,
        optimizer_factory=OPTIMIZERS[opts.optimizer](lr),
        loss_fn=loss_fn,
        train=train,
        model_spec=spec,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        output_key=opts.output_key,
        optimizer_name=opts.optimizer,
        notes={"loss": loss_name},
    )
