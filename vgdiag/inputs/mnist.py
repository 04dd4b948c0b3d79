"""MNIST and Fashion-MNIST as DataBundles: files found or downloaded, read, split."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import UserError
from vgdiag.inputs.idx import (
    IDX_FILES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    read_idx,
)
from vgdiag.inputs.mnist_files import (
    DEFAULT_TIMEOUT_S,
    candidate_dirs,
    download_mnist_family,
    find_file,
    find_idx_files,
    source_of,
)

NUM_CLASSES = 10
VAL_FRACTION = 0.1  # the reference experiment: 90/10 train/val split of the training set


def split_lengths(n: int, fractions: Sequence[float]) -> list[int]:
    """Part sizes for fractions of n, rounded the way torch.utils.data.random_split does.

    Each part gets floor(n * fraction); the leftover items go one each to the first parts.
    """
    lengths = [math.floor(n * f) for f in fractions]
    for i in range(n - sum(lengths)):
        lengths[i % len(lengths)] += 1
    return lengths


def split_train_val(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded 90/10 train/val indices of range(n).

    Index for index the same as
    `random_split(range(n), [0.9, 0.1], generator=torch.Generator().manual_seed(seed))`,
    so for the 60,000 training images and seed 42 it is the reference experiment's split.
    """
    n_train, n_val = split_lengths(n, (1.0 - VAL_FRACTION, VAL_FRACTION))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[:n_train], perm[n_train : n_train + n_val]


def _check_pair(images: np.ndarray, labels: np.ndarray, img_path: Path, lbl_path: Path) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise UserError(
            f"{img_path} holds {images.dtype} data of shape {images.shape}; expected "
            "unsigned bytes (N, rows, cols): is it the right file?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise UserError(
            f"{lbl_path} holds {labels.dtype} data of shape {labels.shape}; expected "
            "unsigned bytes (N,): is it the right file?"
        )
    if len(images) != len(labels):
        raise UserError(
            f"{img_path} holds {len(images)} images but {lbl_path} holds {len(labels)} "
            "labels: the files do not belong together"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise UserError(f"{lbl_path} has label {int(labels.max())}; MNIST-family labels are 0..9")


def _to_split(images: np.ndarray, labels: np.ndarray, index: torch.Tensor | None) -> TensorSplit:
    # Select on the bytes, then convert: one float copy per split. Fancy indexing and
    # copy() also give writable arrays (the parsed ones view a read-only buffer).
    if index is None:
        images, labels = images.copy(), labels
    else:
        rows = index.numpy()
        images, labels = images[rows], labels[rows]
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float32).div_(255.0)
    return TensorSplit(x, torch.from_numpy(labels.astype(np.int64)))


def _remove_empty(folders: list[Path]) -> None:
    """Remove these folders, deepest first, where they are (still) empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def load_mnist_family(
    name: str,
    *,
    data_dir: Path | None = None,
    seed: int = 42,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DataBundle:
    """Load MNIST or Fashion-MNIST as a DataBundle: train/val from the training set, test.

    Pixels become float32 in [0, 1] (x / 255, no mean/std normalisation), shape
    (N, 1, rows, cols); labels int64. The training set is split 90/10 into train/val
    with `split_train_val(n, seed)` (54,000 / 6,000 for the real files); test is the
    t10k set.

    Args:
        name: "fashion-mnist" or "mnist".
        data_dir: folder holding the files (plain, or torchvision's `<root>/FashionMNIST/raw`
            layout); None uses the cache folder (see `cache_dir`).
        seed: seed of the train/val split.
        download: fetch missing files from the official sources (or `mirrors`).
        mirrors: base URLs, overriding $VGDIAG_MNIST_MIRROR and the official sources.
        checksums: .gz file name -> MD5, replacing the published table.
        timeout: seconds allowed for each connection and read while downloading.

    Returns:
        The dataset on the CPU.

    Raises:
        UserError: the files are missing and could not be downloaded (the message says
            which folder to put which files in), or a file is corrupt.
    """
    src = source_of(name)
    files = find_idx_files(name, data_dir)
    if files is None:
        target, _ = candidate_dirs(name, data_dir)
        missing = [stem for stem in IDX_FILES if find_file(target, stem) is None]
        wanted = ", ".join(f"{stem}.gz" for stem in IDX_FILES)
        advice = f"put {wanted} (or unzipped) in {target}" + (
            " or pass --data-dir DIR where they are" if data_dir is None else "")
        if not download:
            raise UserError(f"{src.name} files not found in {target} (download is off): {advice}")
        created = [d for d in (target, *target.parents) if not d.exists()]
        try:
            download_mnist_family(
                name, target, files=missing, mirrors=mirrors, checksums=checksums, timeout=timeout
            )
        except UserError as exc:
            _remove_empty(created)  # a failed download leaves no folders behind
            raise UserError(
                f"{src.name} files not found in {target} and download failed ({exc}): {advice}"
            ) from None
        files = find_idx_files(name, data_dir)
        if files is None:  # e.g. a file removed between download and read
            raise UserError(f"{src.name} files not found in {target}: {advice}")

    train_x, train_y = read_idx(files[TRAIN_IMAGES], 3), read_idx(files[TRAIN_LABELS], 1)
    test_x, test_y = read_idx(files[TEST_IMAGES], 3), read_idx(files[TEST_LABELS], 1)
    _check_pair(train_x, train_y, files[TRAIN_IMAGES], files[TRAIN_LABELS])
    _check_pair(test_x, test_y, files[TEST_IMAGES], files[TEST_LABELS])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(
            f"{files[TRAIN_IMAGES]} has {train_x.shape[1:]} images but {files[TEST_IMAGES]} "
            f"has {test_x.shape[1:]}: the files do not belong together"
        )
    min_train = math.ceil(1 / VAL_FRACTION)
    if len(train_x) < min_train:
        raise UserError(
            f"{files[TRAIN_IMAGES]} holds {len(train_x)} images; at least {min_train} are "
            "needed for a validation split"
        )
    train_idx, val_idx = split_train_val(len(train_x), seed)
    rows, cols = train_x.shape[1:]
    return DataBundle(
        src.name,
        _to_split(train_x, train_y, train_idx),
        _to_split(train_x, train_y, val_idx),
        _to_split(test_x, test_y, None),
        num_classes=NUM_CLASSES,
        input_shape=(1, int(rows), int(cols)),
    )
