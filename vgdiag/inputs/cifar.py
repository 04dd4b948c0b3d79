"""CIFAR-10 as a DataBundle: the batches found or downloaded, read, split.

Works offline first: the six batches (data_batch_1..5, test_batch) are looked for in the
user's folder (or the cache) in the forms the dataset is published in: torchvision's
`<root>/cifar-10-batches-py/` (pickles), the binary version `<root>/cifar-10-batches-bin/`
(`*.bin`), the same files directly in the folder, or the archives
`cifar-10-python.tar.gz` / `cifar-10-binary.tar.gz` (read in place, not extracted).
Only when none is there is the binary archive downloaded, through the MNIST family's
download machinery: a `.part` file, checked against the published MD5, then renamed.

The pickles are read with a restricted unpickler that knows only the few names a CIFAR
batch needs (numpy's array reconstruction and dtype, plain containers): a file naming
anything else is refused before anything in it runs.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import UserError
from vgdiag.inputs.mnist import VAL_FRACTION, _remove_empty, split_train_val
from vgdiag.inputs.mnist_files import (
    DEFAULT_TIMEOUT_S,
    choose_mirrors,
    data_cache,
    fetch_from_mirrors,
)
from vgdiag.textfmt import one_line

NAME = "cifar10"  # vgdiag's dataset name, and the cache subfolder
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)  # channels first; a record is 1024 red, 1024 green, 1024 blue
PIXELS = math.prod(IMAGE_SHAPE)
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
BATCHES = (*TRAIN_BATCHES, TEST_BATCH)
PY_FOLDER = "cifar-10-batches-py"  # torchvision's layout, and the python archive's folder
BIN_FOLDER = "cifar-10-batches-bin"
PY_ARCHIVE = "cifar-10-python.tar.gz"
BIN_ARCHIVE = "cifar-10-binary.tar.gz"

MIRROR_ENV = "VGDIAG_CIFAR_MIRROR"  # base URL(s), comma-separated, tried in order
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
BIN_ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the dataset's page


# --- reading a batch -----------------------------------------------------------------


# The array element types a batch may hold (its images are bytes, its labels
# integers; floats are refused later, by name); any other dtype is refused, never made.
_PLAIN_DTYPES = frozenset({"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})


class _Dtype:
    """A dtype as the pickle describes it, inert until _PickledArray makes it real.

    Only its type code and byte order are kept: the state numpy would apply (fields,
    flags) is what a tampered file would use to build an object array over memory of
    its choosing, and a plain integer dtype has none.
    """

    def __init__(self, spec: object, align: object = False, copy: object = True) -> None:
        self.spec = spec
        self.order = "|"

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def real(self, source: str) -> np.dtype[Any]:
        if not isinstance(self.spec, str) or self.spec not in _PLAIN_DTYPES:
            raise UserError(f"{source} is not a CIFAR-10 batch file: it holds an array of "
                            f"{self.spec!r}, not of bytes or integers")
        return np.dtype(self.spec if self.order in ("|", "=") else self.order + self.spec)


class _PickledArray:
    """An ndarray as the pickle describes it (shape, dtype, raw bytes), inert until
    `real()` checks the parts and builds it with np.frombuffer."""

    def __init__(self, buffer: object = None, dtype: object = None, shape: object = None,
                 order: object = "C") -> None:
        self.buffer, self.dtype, self.shape, self.fortran = buffer, dtype, shape, order == "F"

    def __setstate__(self, state: object) -> None:  # (version,) shape, dtype, fortran, raw
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise ValueError("not an array's state")
        self.shape, self.dtype, self.fortran, self.buffer = state[-4:]

    def real(self, source: str) -> np.ndarray:
        if not isinstance(self.dtype, _Dtype):
            raise UserError(f"{source} is not a CIFAR-10 batch file: an array without a dtype")
        dtype = self.dtype.real(source)
        raw = self.buffer.encode("latin1") if isinstance(self.buffer, str) else self.buffer
        shape = self.shape
        if not (isinstance(raw, (bytes, bytearray)) and isinstance(shape, tuple)
                and all(isinstance(n, int) and n >= 0 for n in shape)
                and math.prod(shape) * dtype.itemsize == len(raw)):
            raise UserError(f"{source} is not a CIFAR-10 batch file: an array whose shape "
                            "and bytes disagree")
        return np.frombuffer(raw, dtype).reshape(shape, order="F" if self.fortran else "C")


def _reconstruct(subtype: object, shape: object, dtype: object) -> _PickledArray:
    return _PickledArray()  # numpy.core.multiarray._reconstruct: the state follows


def _encode(text: object, encoding: object = "latin1") -> bytes:
    # Python 3's protocol 2 writes bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("not bytes written as latin-1 text")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """What the pickle may name, as inert stand-ins (numpy 1 writes numpy.core, numpy
    2 numpy._core; Python 2 __builtin__): nothing numpy builds runs on its word."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _PickledArray,  # only ever _reconstruct's first argument
        ("numpy", "dtype"): _Dtype,
        ("_codecs", "encode"): _encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _PickledArray
    for builtins in ("builtins", "__builtin__"):
        for kind in (list, dict, tuple):
            allowed[(builtins, kind.__name__)] = kind
    return allowed


def _real(obj: Any, source: str) -> Any:
    """The unpickled value with its array stand-ins made real (checked) arrays."""
    if isinstance(obj, _PickledArray):
        return obj.real(source)
    if isinstance(obj, dict):
        return {k: _real(v, source) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_real(v, source) for v in obj)
    return obj


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the names a CIFAR batch needs, each to an inert
    stand-in (see _allowed_globals); `_real` then builds the arrays from checked parts.

    Any other global (os.system, builtins.eval, a class of some module) is refused with a
    UserError naming the file, so a hostile file fails before any of its code runs, and
    no numpy constructor ever sees what the file says.
    """

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file, encoding="latin1")  # the batches were pickled by Python 2
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.source} is not a CIFAR-10 batch file: it asks for {module}.{name}, "
                "which a CIFAR-10 batch never does (not loaded, nothing in it was run)"
            ) from None


def _check_batch(images: Any, labels: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != PIXELS:
        shape = getattr(images, "shape", None)
        what = f"{images.dtype} data of shape {shape}" if isinstance(images, np.ndarray) \
            else f"a {type(images).__name__}"
        raise UserError(
            f"{source} holds {what} as its images; expected unsigned bytes (N, {PIXELS}): "
            "is it a CIFAR-10 batch file?"
        )
    try:
        label_array = np.asarray(labels)
    except (TypeError, ValueError):
        label_array = np.asarray([])
    if label_array.ndim != 1 or label_array.dtype.kind not in "iu" \
            or len(label_array) != len(images):
        raise UserError(
            f"{source} holds {len(images)} images but labels of shape "
            f"{label_array.shape} ({label_array.dtype}); expected {len(images)} integers: "
            "is it a CIFAR-10 batch file?"
        )
    if len(label_array) and (label_array.min() < 0 or label_array.max() >= NUM_CLASSES):
        bad = int(label_array.max() if label_array.max() >= NUM_CLASSES else label_array.min())
        raise UserError(f"{source} has label {bad}; CIFAR-10 labels are 0..9")
    return images, label_array.astype(np.int64)


def parse_pickled_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the python version: (images (N, 3072) uint8, labels (N,) int64).

    Raises:
        UserError: the file is not a pickled CIFAR-10 batch (including a pickle that
            names anything but numpy arrays and plain containers: it is not run).
    """
    try:
        batch = _real(BatchUnpickler(io.BytesIO(data), source).load(), source)
    except UserError:
        raise
    except Exception:  # a malformed pickle fails in many ways; all mean one thing
        raise UserError(
            f"{source} is not a CIFAR-10 batch file (not a readable pickle); download it "
            "again"
        ) from None
    if not isinstance(batch, dict):
        raise UserError(
            f"{source} is not a CIFAR-10 batch file (it holds a {type(batch).__name__}, "
            "not a dict)"
        )
    fields = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in fields or "labels" not in fields:
        hint = " (a CIFAR-100 file?)" if "fine_labels" in fields else ""
        raise UserError(
            f"{source} is not a CIFAR-10 batch file{hint}: it has no 'data' and 'labels' "
            f"entries (it has {', '.join(sorted(map(str, fields))) or 'none'})"
        )
    return _check_batch(fields["data"], fields["labels"], source)


def parse_binary_batch(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A batch of the binary version (records of 1 label byte + 3072 pixel bytes)."""
    record = 1 + PIXELS
    if not data or len(data) % record:
        raise UserError(
            f"{source} is not a CIFAR-10 binary batch: {len(data)} bytes is not a whole "
            f"number of {record}-byte records; download it again"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return _check_batch(rows[:, 1:], rows[:, 0], source)


# --- finding the files ---------------------------------------------------------------


@dataclass(frozen=True)
class CifarFiles:
    """Where the six batches are: a folder of files, or an archive."""

    path: Path  # the folder, or the .tar.gz
    binary: bool  # the binary version (*.bin records), else the python one (pickles)

    @property
    def is_archive(self) -> bool:
        return self.path.name.endswith(".tar.gz")


def cache_dir() -> Path:
    """`$VGDIAG_DATA_DIR/cifar10` when that variable is set, else `~/.cache/vgdiag/cifar10`."""
    return data_cache(NAME)


def candidate_dirs(data_dir: Path | None) -> tuple[Path, list[Path]]:
    """The folder to download into, and every folder to look in (that one first)."""
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir()
    root = target if data_dir is not None else target.parent
    candidates = [target, target / PY_FOLDER, target / BIN_FOLDER, root / PY_FOLDER,
                  root / BIN_FOLDER]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return target, unique


def find_cifar_files(data_dir: Path | None = None) -> CifarFiles | None:
    """Find the six batches, all in one folder or in one archive.

    Looks in `data_dir` (or the cache folder when None) and its `cifar-10-batches-py/` and
    `cifar-10-batches-bin/` subfolders (and those beside the cache folder, torchvision's
    root); in each, the pickles win over the binary files, files over the archives.
    """
    _, folders = candidate_dirs(data_dir)
    for folder in folders:
        if all((folder / stem).is_file() for stem in BATCHES):
            return CifarFiles(folder, binary=False)
        if all((folder / f"{stem}.bin").is_file() for stem in BATCHES):
            return CifarFiles(folder, binary=True)
        for archive, binary in ((PY_ARCHIVE, False), (BIN_ARCHIVE, True)):
            if (folder / archive).is_file():
                return CifarFiles(folder / archive, binary=binary)
    return None


def _read_folder(files: CifarFiles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    parse = parse_binary_batch if files.binary else parse_pickled_batch
    out = {}
    for stem in BATCHES:
        path = files.path / (f"{stem}.bin" if files.binary else stem)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
        out[stem] = parse(data, str(path))
    return out


def _read_archive(files: CifarFiles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The batches from the archive, read member by member in one pass, not extracted."""
    parse = parse_binary_batch if files.binary else parse_pickled_batch
    wanted = {f"{stem}.bin" if files.binary else stem: stem for stem in BATCHES}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with tarfile.open(files.path, mode="r:*") as tar:
            for member in tar:
                stem = wanted.get(member.name.rsplit("/", 1)[-1])
                if stem is None or stem in out or not member.isfile():
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                with handle:
                    out[stem] = parse(handle.read(), f"{files.path} member {member.name}")
    except (tarfile.TarError, OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{files.path} is not a readable archive ({one_line(exc) or type(exc).__name__}); "
            "download it again"
        ) from None
    missing = [name for name, stem in wanted.items() if stem not in out]
    if missing:
        raise UserError(
            f"{files.path} lacks {', '.join(missing)}: is it the "
            f"{'binary' if files.binary else 'python'} version of CIFAR-10?"
        )
    return out


def read_cifar_files(files: CifarFiles) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Batch name -> (images (N, 3072) uint8, labels (N,) int64), checked."""
    return _read_archive(files) if files.is_archive else _read_folder(files)


# --- downloading ---------------------------------------------------------------------


def _mirrors(mirrors: Sequence[str] | None) -> list[str]:
    return choose_mirrors(mirrors, MIRROR_ENV, MIRRORS)


def download_cifar10(
    dest: Path,
    *,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Download the binary archive into dest, verifying its MD5; each mirror in turn.

    Args:
        dest: the folder to download into (created if needed).
        mirrors: base URLs, overriding $VGDIAG_CIFAR_MIRROR and the official source.
        md5: the archive's MD5, replacing the published one.
        timeout: seconds allowed for the connection and for each read.

    Returns:
        The path written (`dest/cifar-10-binary.tar.gz`).

    Raises:
        UserError: the archive could not be downloaded with a matching checksum from any
            mirror; the message is one line with every mirror's reason.
    """
    bases = _mirrors(mirrors)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {dest}: {exc.strerror or exc}") from None
    return fetch_from_mirrors(BIN_ARCHIVE, bases, dest, md5 or BIN_ARCHIVE_MD5, timeout)


# --- the dataset ---------------------------------------------------------------------


def _to_split(images: np.ndarray, labels: np.ndarray, index: torch.Tensor | None) -> TensorSplit:
    # Select on the bytes, then convert: one float copy per split (and a writable one).
    if index is None:
        images = images.copy()
    else:
        rows = index.numpy()
        images, labels = images[rows], labels[rows]
    x = torch.from_numpy(images.reshape(-1, *IMAGE_SHAPE)).to(torch.float32).div_(255.0)
    return TensorSplit(x, torch.from_numpy(labels))


def load_cifar10(
    *,
    data_dir: Path | None = None,
    seed: int = 42,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> DataBundle:
    """Load CIFAR-10 as a DataBundle: train/val from the five training batches, test.

    Pixels become float32 in [0, 1] (x / 255, no mean/std normalisation), shape
    (N, 3, 32, 32); labels int64. The training images are split 90/10 into train/val
    with `split_train_val(n, seed)`, as the MNIST family (45,000 / 5,000 for the real
    files); test is test_batch.

    Args:
        data_dir: folder holding the batches or an archive (see `find_cifar_files`);
            None uses the cache folder (see `cache_dir`).
        seed: seed of the train/val split.
        download: fetch the binary archive when nothing is found.
        mirrors: base URLs, overriding $VGDIAG_CIFAR_MIRROR and the official source.
        md5: the archive's MD5, replacing the published one.
        timeout: seconds allowed for each connection and read while downloading.

    Raises:
        UserError: the files are missing and could not be downloaded (the message says
            which folder to put which files in), or a file is corrupt or not CIFAR-10.
    """
    files = find_cifar_files(data_dir)
    if files is None:
        target, folders = candidate_dirs(data_dir)
        for folder in folders:  # some batches but not all: a copy cut short, not absent
            for suffix in ("", ".bin"):
                there = [stem for stem in BATCHES if (folder / f"{stem}{suffix}").is_file()]
                if there:
                    missing = [f"{stem}{suffix}" for stem in BATCHES if stem not in there]
                    raise UserError(
                        f"{folder} holds {len(there)} of the 6 CIFAR-10 batches; missing: "
                        f"{', '.join(missing)}: copy them there (or empty the folder to "
                        "download the dataset again)")
        advice = (
            f"put {BIN_ARCHIVE} or {PY_ARCHIVE} (or its extracted {BIN_FOLDER}/ or "
            f"{PY_FOLDER}/ folder) in {target}"
            + (" or pass --data-dir DIR where they are" if data_dir is None else "")
        )
        if not download:
            raise UserError(f"{NAME} files not found in {target} (download is off): {advice}")
        created = [d for d in (target, *target.parents) if not d.exists()]
        try:
            download_cifar10(target, mirrors=mirrors, md5=md5, timeout=timeout)
        except UserError as exc:
            _remove_empty(created)  # a failed download leaves no folders behind
            raise UserError(
                f"{NAME} files not found in {target} and download failed ({exc}): {advice}"
            ) from None
        files = find_cifar_files(data_dir)
        if files is None:  # e.g. a file removed between download and read
            raise UserError(f"{NAME} files not found in {target}: {advice}")

    batches = read_cifar_files(files)
    train_x = np.concatenate([batches[stem][0] for stem in TRAIN_BATCHES])
    train_y = np.concatenate([batches[stem][1] for stem in TRAIN_BATCHES])
    test_x, test_y = batches[TEST_BATCH]
    min_train = math.ceil(1 / VAL_FRACTION)  # a validation split of at least one image
    if len(train_x) < min_train:
        raise UserError(
            f"{files.path} holds {len(train_x)} training images; at least {min_train} are "
            "needed for a validation split"
        )
    train_idx, val_idx = split_train_val(len(train_x), seed)
    return DataBundle(
        NAME,
        _to_split(train_x, train_y, train_idx),
        _to_split(train_x, train_y, val_idx),
        _to_split(test_x, test_y, None),
        num_classes=NUM_CLASSES,
        input_shape=IMAGE_SHAPE,
    )
