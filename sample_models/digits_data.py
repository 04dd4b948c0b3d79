"""An example --data factory: scikit-learn's 8x8 digits as torch Datasets.

`vgdiag run --model sample_models/factory.py:make_mlp --data sample_models/digits_data.py:make_data`

A --data factory takes no required arguments (a `seed` keyword receives the run's seed)
and returns (train, val) or (train, val, test): Datasets of (input, target) pairs,
DataLoaders, or (inputs, targets) tensor pairs. Small Datasets are copied to the
training device as tensors; DataLoaders are iterated as they are each epoch.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset, random_split


def _digits() -> TensorDataset:
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixels 0..16
    labels = torch.tensor(raw.target, dtype=torch.int64)
    return TensorDataset(images, labels)


def make_data(
    seed: int = 42, val_fraction: float = 0.1, test_fraction: float = 0.2
) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset, torch.utils.data.Dataset]:
    """(train, val, test) Datasets of (image (1, 8, 8) in [0, 1], label 0..9)."""
    full = _digits()
    n = len(full)
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    generator = torch.Generator().manual_seed(seed)
    train, val, test = random_split(full, [n - n_val - n_test, n_val, n_test], generator=generator)
    return train, val, test


def make_loaders(seed: int = 42, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """(train, val) DataLoaders: the loader's own batch size and shuffling are used."""
    train, val, _ = make_data(seed)
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(val, batch_size=256),
    )
