"""The IDX file format of MNIST-family datasets: parse bytes, read a file (gzipped or not)."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from vgdiag.errors import UserError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


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


def parse_idx(data: bytes, source: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse the bytes of one (uncompressed) IDX file.

    Args:
        data: the whole file.
        source: a name for the data, used in error messages.
        ndim: the dimensions the file must have (3 for images, 1 for labels), checked
            against its header first: a labels file given for images, or a wrong magic
            number, is named as such rather than as a file of the wrong length.

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
    code = data[2]
    if code not in _IDX_DTYPES:
        raise UserError(f"{source}: unknown IDX type code 0x{code:02x}; download it again")
    declared = data[3]
    if declared == 0:
        raise UserError(f"{source}: IDX header declares no dimensions; download it again")
    if ndim is not None and declared != ndim:
        expected_kind = {1: "a labels file", 3: "an images file"}.get(ndim, "this file")
        declared_kind = {1: "the labels file", 3: "the images file"}.get(declared, "another")
        raise UserError(
            f"{source} declares {declared} dimension(s) (magic number {data[:4].hex()}) where "
            f"{expected_kind} has {ndim}: is it {declared_kind}, or is its magic number wrong?")
    ndim = declared
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
            f"{dims} of {dtype.name} values, type code 0x{code:02x}); download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def read_idx(path: Path, ndim: int | None = None) -> np.ndarray:
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
    return parse_idx(data, str(path), ndim)
