"""From what the user asked for (CLI flags) to an Experiment and its data.

One place turns options (vgdiag.inputs.options) into a recipe so that `run`, `inspect`,
`compare` and the dashboard's "apply a fix" build exactly the same baseline.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.nn import functional

from vgdiag.engine.devices import resolve_device
from vgdiag.engine.experiment import OPTIMIZERS, Experiment, TrainConfig
from vgdiag.engine.models import build_mlp, init_weights, parse_init
from vgdiag.engine.splits import DataBundle
from vgdiag.errors import UserError
from vgdiag.inputs.datasets import DATA_DEFAULTS, DATASETS, load_dataset
from vgdiag.inputs.options import BUILTIN_MLP, RunOptions

__all__ = ["BUILTIN_MLP", "RunOptions", "build_experiment", "check_model_and_data", "load_data"]


def check_model_and_data(opts: RunOptions) -> None:
    """The checks of RunOptions.validate that need the engine's tables (and torch)."""
    parse_init(opts.init)
    if opts.data not in DATASETS and ":" not in opts.data:
        if opts.data.endswith(".py"):
            raise UserError(
                f"--data {opts.data!r} names a file but not the function in it that makes "
                f"the data: give {opts.data}:FUNCTION (e.g. {opts.data}:make_data)")
        raise UserError(
            f"unknown --data {opts.data!r}: use one of {', '.join(DATASETS)} "
            "or file.py:factory"
        )


def data_key(opts: RunOptions) -> tuple[Any, ...]:
    """The options `load_data` reads: runs with equal keys can share one loaded bundle."""
    return (opts.data, opts.seed, opts.data_dir, opts.synthetic_size)


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
            model = build_mlp(in_features, classes, depth, width, act)
            # The output layer (the last child) feeds the logits: gain 1, not the act's.
            return init_weights(model, init, act, output=str(len(model) - 1))

        spec = f"{BUILTIN_MLP} depth={depth} width={width} activation={act} init={init}"
        if opts.weights is not None:
            from vgdiag.inputs.loading import with_weights

            factory = with_weights(factory, opts.weights)
    else:
        from vgdiag.inputs.loading import load_model_factory

        factory, spec = load_model_factory(
            opts.model,
            model_args=opts.model_args,
            trust_pickle=opts.trust_pickle,
            weights=opts.weights,
        )
    if opts.weights is not None:  # the folder's config says where the weights came from
        spec = f"{spec} weights={opts.weights}"
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
        recipe=opts.as_recipe(),
    )
