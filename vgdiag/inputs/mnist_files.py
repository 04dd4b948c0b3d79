"""Where MNIST-family files are: the user's folder, torchvision's layout, the cache,
or a verified download.

Works offline first: the four standard files are looked for in the user's folder
(a plain folder, or torchvision's `<root>/FashionMNIST/raw/` and `<root>/MNIST/raw/`),
gzipped or not, and only downloaded when absent. A download is written to a `.part`
file, checked against the published MD5 and only then renamed into place, so an
interrupted or tampered download never leaves a file that looks valid.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from vgdiag.errors import UserError
from vgdiag.inputs.idx import IDX_FILES
from vgdiag.textfmt import one_line

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "VGDIAG_DATA_DIR"  # root of the cache; each dataset gets a subfolder
MIRROR_ENV = "VGDIAG_MNIST_MIRROR"  # base URL(s), comma-separated, tried in order
DEFAULT_TIMEOUT_S = 30.0  # per connect / per read, not for the whole file
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


def source_of(name: str) -> MnistSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise UserError(
            f"unknown MNIST-family dataset {name!r}: choose one of {', '.join(SOURCES)}"
        ) from None


# --- finding the files ---------------------------------------------------------------


def cache_dir(name: str) -> Path:
    """The folder downloads go to when no data_dir is given.

    `$VGDIAG_DATA_DIR/<name>` when that variable is set, else `~/.cache/vgdiag/<name>`.
    """
    source_of(name)
    return data_cache(name)


def data_cache(name: str) -> Path:
    """`$VGDIAG_DATA_DIR/<name>`, else `~/.cache/vgdiag/<name>`: any dataset's cache."""
    root = os.environ.get(DATA_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vgdiag"
    return base / name


def candidate_dirs(name: str, data_dir: Path | None) -> tuple[Path, list[Path]]:
    """The folder to download into, and every folder to look in (that one first)."""
    src = source_of(name)
    target = Path(data_dir).expanduser() if data_dir is not None else cache_dir(name)
    root = target if data_dir is not None else target.parent
    candidates = [target, root / src.torchvision_folder / "raw", root / name]
    unique: list[Path] = []
    for folder in candidates:
        if folder not in unique:
            unique.append(folder)
    return target, unique


def find_file(folder: Path, stem: str) -> Path | None:
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
    _, folders = candidate_dirs(name, data_dir)
    for folder in folders:
        found = {stem: find_file(folder, stem) for stem in IDX_FILES}
        if all(path is not None for path in found.values()):
            return {stem: path for stem, path in found.items() if path is not None}
    return None


# --- downloading ---------------------------------------------------------------------


def _mirrors(src: MnistSource, mirrors: Sequence[str] | None) -> list[str]:
    return choose_mirrors(mirrors, MIRROR_ENV, src.mirrors)


def choose_mirrors(mirrors: Sequence[str] | None, env: str,
                   defaults: Sequence[str]) -> list[str]:
    """The base URLs to try: those given, else $`env` (comma or space separated), else
    the dataset's official ones."""
    if mirrors is not None:
        chosen = list(mirrors)
    elif os.environ.get(env):
        chosen = [m for m in os.environ[env].replace(",", " ").split() if m]
    else:
        chosen = list(defaults)
    if not chosen:
        raise UserError(f"no download mirror given: set {env} to a base URL")
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
    src = source_of(name)
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
        written.append(fetch_from_mirrors(filename, bases, dest, table[filename], timeout))
    return written


def fetch_from_mirrors(filename: str, bases: Sequence[str], dest: Path, md5: str,
                       timeout: float) -> Path:
    """`filename` from the first base URL that serves it with this MD5, into `dest`.

    Raises:
        UserError: no mirror did; the message is one line with every mirror's reason.
    """
    reasons: list[str] = []
    for base in bases:
        url = f"{base.rstrip('/')}/{filename}"
        logger.info("downloading %s", url)
        try:
            _fetch(url, dest / filename, md5, timeout)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            reasons.append(f"{url}: {one_line(exc) or type(exc).__name__}")
            continue
        return dest / filename
    raise UserError(f"could not download {filename} ({'; '.join(reasons)})")
