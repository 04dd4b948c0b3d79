"""MNIST and Fashion-MNIST from their IDX files: find, download, parse, split.

Works offline first: the four standard files are looked for in the user's folder
(a plain folder, or torchvision's `<root>/FashionMNIST/raw/` and `<root>/MNIST/raw/`),
gzipped or not, and only downloaded when absent. A download is written to a `.part`
file, checked against the published MD5 and only then renamed into place, so an
interrupted or tampered download never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import UserError
from vgdiag.textfmt import one_line

logger = logging.getLogger(__name__)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

DATA_DIR_ENV = "VGDIAG_DATA_DIR"  # root of the cache; each dataset gets a subfolder
MIRROR_ENV = "VGDIAG_MNIST_MIRROR"  # base URL(s), comma-separated, tried in order
DEFAULT_TIMEOUT_S = 30.0  # per connect / per read, not for the whole file
NUM_CLASSES = 10
VAL_FRACTION = 0.1  # the reference experiment: 90/10 train/val split of the training set

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class MnistSource:
    """Where a dataset of the MNIST family comes from."""

    name: str  # vgdiag's dataset name
    torchvision_folder: str  # torchvision keeps the files in <root>/<folder>/raw/
    mirrors: tuple[str, ...]  # base URLs, tried in order
    md5: Mapping[str, str]  # published MD5 of each .gz file


# The URLs and MD5s torchvision uses for the official files.
SOURCES: dict[str, MnistSource] = {
    "fashion-mnist": MnistSource(
        name="fashion-mnist",
        torchvision_folder="FashionMNIST",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    "mnist": MnistSource(
        name="mnist",
        torchvision_folder="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
}


def _source(name: str) -> MnistSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(
            f"unknown MNIST-family dataset {name!r}: choose one of {', '.join(SOURCES)}"
        ) from None


# --- IDX parsing ---------------------------------------------------------------------


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of one (uncompressed) IDX file.

    Args:
        data: the whole file.
        source: a name for the data, used in error messages.

    Returns:
        A read-only array with the file's shape, in native byte order.

    Raises:
        UserError: the magic number, type code or dimensions are wrong, or the data
            are shorter or longer than the header says.
    """
    if len(data) < 4:
        raise UserError(f"{source} is not an IDX file: only {len(data)} bytes; download it again")
    if data[0] != 0 or data[1] != 0:
        raise UserError(
            f"{source} is not an IDX file (magic number {data[:4].hex()}); download it again"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise UserError(f"{source}: unknown IDX type code 0x{code:02x}; download it again")
    if ndim == 0:
        raise UserError(f"{source}: IDX header declares no dimensions; download it again")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{source} is truncated inside its IDX header; download it again")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise UserError(
            f"{source} is {what} ({len(data)} bytes, expected {expected} for shape "
            f"{dims}); download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file, gzipped or not (told apart by content, not by name).

    Args:
        path: the file.

    Returns:
        The file's array (read-only when no byte swap was needed).

    Raises:
        UserError: the file cannot be read, is not valid gzip, or is not a valid IDX file.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise UserError(f"{path} is a corrupt gzip file ({exc}); download it again") from None
    return parse_idx(data, str(path))


# --- finding the files ---------------------------------------------------------------


def cache_dir(name: str) -> Path:
    """The folder downloads go to when no data_dir is given.

    `$VGDIAG_DATA_DIR/<name>` when that variable is set, else `~/.cache/vgdiag/<name>`.
    """
    _source(name)
    root = os.environ.get(DATA_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vgdiag"
    return base / name


def _candidate_dirs(name: str, data_dir: Path | None) -> tuple[Path, list[Path]]:
    """The folder to download into, and every folder to look in (that one first)."""
    src = _source(name)
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)
    root = target if data_dir is not None else target.parent
    candidates = [target, root / src.torchvision_folder / "raw", root / name]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return target, unique


def _find_file(folder: Path, stem: str) -> Path | None:
    # The plain file wins over the .gz: torchvision keeps both, and plain reads faster.
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_idx_files(name: str, data_dir: Path | None = None) -> dict[str, Path] | None:
    """Find the four IDX files of a dataset, all in one folder.

    Looks in `data_dir` (or the cache folder when None), then in torchvision's layout
    `<root>/FashionMNIST/raw/` or `<root>/MNIST/raw/`, then in `<root>/<name>/`.

    Args:
        name: "fashion-mnist" or "mnist".
        data_dir: the user's folder, or None for the cache folder.

    Returns:
        File stem (e.g. "train-images-idx3-ubyte") -> path, or None when no folder
        holds all four.
    """
    _, folders = _candidate_dirs(name, data_dir)
    for folder in folders:
        found = {stem: _find_file(folder, stem) for stem in IDX_FILES}
        if all(path is not None for path in found.values()):
            return {stem: path for stem, path in found.items() if path is not None}
    return None


# --- downloading ---------------------------------------------------------------------


def _mirrors(src: MnistSource, mirrors: Sequence[str] | None) -> list[str]:
    if mirrors is not None:
        chosen = list(mirrors)
    elif os.environ.get(MIRROR_ENV):
        chosen = [m for m in os.environ[MIRROR_ENV].replace(",", " ").split() if m]
    else:
        chosen = list(src.mirrors)
    if not chosen:
        raise UserError(f"no download mirror given: set {MIRROR_ENV} to a base URL")
    return chosen


def _fetch(url: str, dest: Path, md5: str, timeout: float) -> None:
    """Download url to dest via a .part file; rename only when the MD5 matches."""
    fd, part_name = tempfile.mkstemp(dir=dest.parent, prefix=f"{dest.name}.", suffix=".part")
    part = Path(part_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            promised = resp.headers.get("Content-Length")
            received = 0
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
        # http.client returns a short body without complaint when the peer hangs up.
        if promised is not None and promised.isdigit() and received != int(promised):
            raise ValueError(f"connection closed after {received} of {promised} bytes")
        got = digest.hexdigest()
        if got != md5.lower():
            raise ValueError(f"checksum mismatch: expected md5 {md5}, got {got}")
        os.replace(part, dest)
    finally:
        # Whatever stopped us (bad checksum, network, Ctrl-C), no partial file stays.
        with contextlib.suppress(FileNotFoundError):
            part.unlink()


def download_mnist_family(
    name: str,
    dest: Path,
    *,
    files: Sequence[str] | None = None,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Path]:
    """Download the gzipped IDX files of a dataset into dest, verifying each MD5.

    Each file is tried from each mirror in turn; a file is in place only once its
    checksum matched.

    Args:
        name: "fashion-mnist" or "mnist".
        dest: the folder to download into (created if needed).
        files: file stems to fetch (default: all four).
        mirrors: base URLs, overriding $VGDIAG_MNIST_MIRROR and the official sources.
        checksums: .gz file name -> MD5, replacing the published table.
        timeout: seconds allowed for the connection and for each read.

    Returns:
        The paths written.

    Raises:
        UserError: a file could not be downloaded with a matching checksum from any
            mirror; the message is one line with every mirror's reason.
    """
    src = _source(name)
    bases = _mirrors(src, mirrors)
    table = dict(src.md5 if checksums is None else checksums)
    stems = list(IDX_FILES if files is None else files)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {dest}: {exc.strerror or exc}") from None
    written: list[Path] = []
    for stem in stems:
        filename = f"{stem}.gz"
        if filename not in table:
            raise UserError(f"no checksum known for {filename}: add it to the checksum table")
        reasons: list[str] = []
        for base in bases:
            url = f"{base.rstrip('/')}/{filename}"
            logger.info("downloading %s", url)
            try:
                _fetch(url, dest / filename, table[filename], timeout)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                reasons.append(f"{url}: {one_line(exc) or type(exc).__name__}")
                continue
            written.append(dest / filename)
            break
        else:
            raise UserError(f"could not download {filename} ({'; '.join(reasons)})")
    return written


# --- splitting and loading -----------------------------------------------------------


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
    src = _source(name)
    files = find_idx_files(name, data_dir)
    if files is None:
        target, _ = _candidate_dirs(name, data_dir)
        missing = [stem for stem in IDX_FILES if _find_file(target, stem) is None]
        wanted = ", ".join(f"{stem}.gz" for stem in IDX_FILES)
        advice = f"put {wanted} (or unzipped) in {target} or pass --data-dir"
        if not download:
            raise UserError(f"{src.name} files not found in {target} (download is off): {advice}")
        try:
            download_mnist_family(
                name, target, files=missing, mirrors=mirrors, checksums=checksums, timeout=timeout
            )
        except UserError as exc:
            raise UserError(
                f"{src.name} files not found in {target} and download failed ({exc}): {advice}"
            ) from None
        files = find_idx_files(name, data_dir)
        if files is None:  # e.g. a file removed between download and read
            raise UserError(f"{src.name} files not found in {target}: {advice}")

    train_x, train_y = read_idx(files[TRAIN_IMAGES]), read_idx(files[TRAIN_LABELS])
    test_x, test_y = read_idx(files[TEST_IMAGES]), read_idx(files[TEST_LABELS])
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
