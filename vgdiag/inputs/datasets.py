"""Datasets as tensors held on the training device, split train/val/test.

Everything small enough to fit stays on the device as one tensor per split, so a
batch is one index_select, not a DataLoader round trip. Image data are float tensors
(N, C, H, W) in [0, 1] (C is 1, or 3 for CIFAR-10); labels are int64 class indices;
models flatten themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import UserError

DATASETS = ("digits", "fashion-mnist", "mnist", "cifar10", "synthetic")


@dataclass(frozen=True)
class DataDefaults:
    """Training defaults that suit a dataset (the CLI uses them when not given)."""

    epochs: int
    batch_size: int
    sgd_lr: float  # SGD learning rate; Adam keeps its own default


# digits has only 1,797 images: with the reference's lr 0.01 even a healthy sigmoid
# net needs thousands of steps, so its defaults give a ten-second run about the
# reference's learning budget (lr x steps ~ 100): small batches and lr 0.1.
# The MNIST family uses the reference experiment's budget, and so does CIFAR-10.
DATA_DEFAULTS: dict[str, DataDefaults] = {
    "digits": DataDefaults(epochs=100, batch_size=16, sgd_lr=0.1),
    "fashion-mnist": DataDefaults(epochs=100, batch_size=512, sgd_lr=0.01),
    "mnist": DataDefaults(epochs=100, batch_size=512, sgd_lr=0.01),
    "cifar10": DataDefaults(epochs=100, batch_size=512, sgd_lr=0.01),
    "synthetic": DataDefaults(epochs=10, batch_size=64, sgd_lr=0.01),
}


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """A seeded random partition of range(n) into parts with the given fractions."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    bounds = np.cumsum([round(f * n) for f in fractions[:-1]])
    return list(np.split(perm, bounds))


def load_digits(seed: int) -> DataBundle:
    """scikit-learn's bundled 8x8 digits (real handwriting, no network), 70/10/20 split."""
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixels are 0..16
    y = torch.tensor(raw.target, dtype=torch.int64)
    tr, va, te = split_indices(len(y), (0.7, 0.1, 0.2), seed)
    return DataBundle(
        "digits",
        TensorSplit(x[tr], y[tr]),
        TensorSplit(x[va], y[va]),
        TensorSplit(x[te], y[te]),
        num_classes=10,
        input_shape=(1, 8, 8),
    )


def load_synthetic(
    seed: int, size: int = 6000, shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10
) -> DataBundle:
    """Learnable synthetic images: one random prototype per class plus noise, in [0, 1].

    Any size, generated in memory; FashionMNIST-shaped by default so benchmarks and
    tests exercise the reference model's real layer sizes.
    """
    if size < 10:
        raise UserError(f"--synthetic-size must be at least 10, got {size}")
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand((num_classes, *shape), generator=g)
    y = torch.randint(0, num_classes, (size,), generator=g)
    noise = torch.rand((size, *shape), generator=g)
    x = (0.6 * prototypes[y] + 0.4 * noise).clamp_(0.0, 1.0)
    tr, va, te = split_indices(size, (0.8, 0.1, 0.1), seed)
    return DataBundle(
        "synthetic",
        TensorSplit(x[tr], y[tr]),
        TensorSplit(x[va], y[va]),
        TensorSplit(x[te], y[te]),
        num_classes=num_classes,
        input_shape=tuple(shape),
    )


def load_dataset(
    name: str,
    *,
    seed: int = 42,
    data_dir: Path | None = None,
    download: bool = True,
    synthetic_size: int = 6000,
) -> DataBundle:
    """Load a built-in dataset by name (on the CPU; call .to(device) after)."""
    if name == "digits":
        return load_digits(seed)
    if name == "synthetic":
        return load_synthetic(seed, size=synthetic_size)
    if name in ("fashion-mnist", "mnist"):
        from vgdiag.inputs.mnist import load_mnist_family

        return load_mnist_family(name, data_dir=data_dir, seed=seed, download=download)
    if name == "cifar10":
        from vgdiag.inputs.cifar import load_cifar10

        return load_cifar10(data_dir=data_dir, seed=seed, download=download)
    raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
