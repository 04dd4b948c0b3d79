"""The MNIST-family loader: IDX parsing, folder layouts, download, split."""

from __future__ import annotations

import gzip
import http.server
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from local_http import closed_port_url, md5_of
from torch.utils.data import random_split

from vgdiag.errors import UserError
from vgdiag.inputs.datasets import load_dataset
from vgdiag.inputs.idx import IDX_FILES, parse_idx, read_idx
from vgdiag.inputs.mnist import load_mnist_family, split_lengths, split_train_val
from vgdiag.inputs.mnist_files import cache_dir, download_mnist_family, find_idx_files

N_TRAIN, N_TEST = 50, 20


# --- an IDX writer of our own, with struct, independent of the reader -------------------


def idx_bytes(values: list[int] | list[float], dims: tuple[int, ...], code: int = 0x08) -> bytes:
    fmt = {0x08: "B", 0x09: "b", 0x0B: "h", 0x0C: "i", 0x0D: "f", 0x0E: "d"}[code]
    header = struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)
    return header + struct.pack(f">{len(values)}{fmt}", *values)


def write_file(path: Path, data: bytes, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_dataset(
    folder: Path, gz: bool, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the four files; return the arrays written, by file stem."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        data = idx_bytes([int(v) for v in array.ravel()], array.shape)
        write_file(folder / stem, data, gz)
    return arrays


@pytest.fixture
def mirror(tmp_path: Path, serve) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """A mirror serving gzipped files: (base URL, arrays written, md5 table)."""
    folder = tmp_path / "mirror"
    arrays = write_dataset(folder, gz=True)
    checksums = {p.name: md5_of(p) for p in folder.iterdir()}
    return serve(folder), arrays, checksums


@pytest.fixture(autouse=True)
def no_real_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's cache or the network from a test.
    monkeypatch.setenv("VGDIAG_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VGDIAG_MNIST_MIRROR", closed_port_url())


# --- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_the_arrays_written(tmp_path: Path, gz: bool) -> None:
    arrays = write_dataset(tmp_path, gz=gz)
    for stem, expected in arrays.items():
        path = tmp_path / (stem + (".gz" if gz else ""))
        got = read_idx(path)
        assert got.dtype == np.uint8
        assert got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("code", "values", "dtype"),
    [
        (0x09, [-128, -1, 0, 5, 127, 3], np.int8),
        (0x0B, [-32768, -2, 0, 300, 32767, 7], np.int16),
        (0x0C, [-(2**31), -70000, 0, 1, 2**31 - 1, 9], np.int32),
        (0x0D, [-1.5, 0.0, 0.25, 3.0e5, 1.0, -2.0], np.float32),
        (0x0E, [-1.5e300, 0.0, 0.1, 3.0, 1.0, -2.0], np.float64),
    ],
)
def test_parse_idx_big_endian_types(code: int, values: list, dtype: type) -> None:
    got = parse_idx(idx_bytes(values, (2, 3), code))
    assert got.dtype == np.dtype(dtype)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got.ravel(), np.array(values, dtype=dtype))


def test_parse_idx_zero_length_dimension() -> None:
    got = parse_idx(idx_bytes([], (0, 28, 28)))
    assert got.shape == (0, 28, 28)


GOOD = idx_bytes(list(range(24)), (2, 3, 4))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 bytes"),
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01" + GOOD[1:], "magic number"),
        (GOOD[:2] + b"\x0a" + GOOD[3:], "type code 0x0a"),
        (GOOD[:3] + b"\x00" + GOOD[4:], "no dimensions"),
        (GOOD[:10], "truncated inside its IDX header"),
        (GOOD[:-1], "truncated (39 bytes, expected 40"),
        (GOOD[:16], "truncated"),
        (GOOD + b"\x00", "longer than its header says"),
        (GOOD[:3] + b"\x04" + GOOD[4:], "truncated"),  # 4 dims: the data read as a dim
    ],
    ids=[
        "empty",
        "two-bytes",
        "bad-magic",
        "bad-type",
        "no-dims",
        "short-header",
        "one-byte-short",
        "no-data",
        "trailing-byte",
        "wrong-ndim",
    ],
)
def test_corrupt_idx_raises_user_error_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(UserError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_gzip_raises_user_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD)[:-12])
    with pytest.raises(UserError, match="corrupt gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_gzip_with_a_valid_stream_but_truncated_idx_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(GOOD[:-5]))
    with pytest.raises(UserError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_unreadable_path_raises_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read"):
        read_idx(tmp_path / "missing")


# --- the split -----------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 11, 19, 45, 50, 55, 99, 101, 1234])
@pytest.mark.parametrize("seed", [0, 42])
def test_split_matches_random_split(n: int, seed: int) -> None:
    train, val = split_train_val(n, seed)
    ref_train, ref_val = random_split(
        range(n), [0.9, 0.1], generator=torch.Generator().manual_seed(seed)
    )
    assert train.tolist() == list(ref_train.indices)
    assert val.tolist() == list(ref_val.indices)


def test_reference_split_is_54000_6000_as_random_split_with_seed_42() -> None:
    train, val = split_train_val(60000, 42)
    assert (len(train), len(val)) == (54000, 6000)
    ref_train, ref_val = random_split(
        range(60000), [54000, 6000], generator=torch.Generator().manual_seed(42)
    )
    assert train.tolist() == list(ref_train.indices)
    assert val.tolist() == list(ref_val.indices)
    assert sorted(train.tolist() + val.tolist()) == list(range(60000))


def test_split_lengths_hand_computed() -> None:
    assert split_lengths(45, (0.9, 0.1)) == [41, 4]  # floor 40 + 4, leftover to train
    assert split_lengths(50, (0.9, 0.1)) == [45, 5]
    assert split_lengths(60000, (0.9, 0.1)) == [54000, 6000]
    assert split_lengths(7, (0.5, 0.25, 0.25)) == [4, 2, 1]


# --- loading -------------------------------------------------------------------------


def check_bundle(bundle, arrays: dict[str, np.ndarray], seed: int = 42) -> None:
    images = arrays["train-images-idx3-ubyte"]
    labels = arrays["train-labels-idx1-ubyte"]
    train_idx, val_idx = split_train_val(len(labels), seed)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (45, 5, N_TEST)
    assert bundle.input_shape == (1, 28, 28)
    assert bundle.num_classes == 10
    for split, idx in ((bundle.train, train_idx), (bundle.val, val_idx)):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(idx), 1, 28, 28)
        expected = images[idx.numpy()].astype(np.float64) / 255.0
        np.testing.assert_allclose(split.x[:, 0].numpy(), expected, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(split.y.numpy(), labels[idx.numpy()])
    test_images = arrays["t10k-images-idx3-ubyte"].astype(np.float64) / 255.0
    np.testing.assert_allclose(bundle.test.x[:, 0].numpy(), test_images, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(bundle.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert float(bundle.train.x.min()) >= 0.0 and float(bundle.train.x.max()) <= 1.0


@pytest.mark.parametrize("gz", [False, True])
def test_load_from_plain_folder(tmp_path: Path, gz: bool) -> None:
    arrays = write_dataset(tmp_path / "data", gz=gz)
    bundle = load_mnist_family("fashion-mnist", data_dir=tmp_path / "data", download=False)
    assert bundle.name == "fashion-mnist"
    check_bundle(bundle, arrays)


def test_seed_changes_the_split_and_matches_random_split(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path, gz=False)
    labels = arrays["train-labels-idx1-ubyte"]
    a = load_mnist_family("mnist", data_dir=tmp_path, seed=1, download=False)
    b = load_mnist_family("mnist", data_dir=tmp_path, seed=2, download=False)
    check_bundle(a, arrays, seed=1)
    assert not torch.equal(a.train.x, b.train.x)
    ref_train, _ = random_split(
        range(N_TRAIN), [0.9, 0.1], generator=torch.Generator().manual_seed(1)
    )
    np.testing.assert_array_equal(a.train.y.numpy(), labels[list(ref_train.indices)])


@pytest.mark.parametrize(
    ("name", "folder"), [("fashion-mnist", "FashionMNIST"), ("mnist", "MNIST")]
)
@pytest.mark.parametrize("gz", [False, True])
def test_load_from_torchvision_layout(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    arrays = write_dataset(tmp_path / folder / "raw", gz=gz)
    found = find_idx_files(name, tmp_path)
    assert found is not None
    assert {p.parent for p in found.values()} == {tmp_path / folder / "raw"}
    check_bundle(load_mnist_family(name, data_dir=tmp_path, download=False), arrays)


def test_other_datasets_torchvision_folder_is_not_used(tmp_path: Path) -> None:
    write_dataset(tmp_path / "MNIST" / "raw", gz=True)
    assert find_idx_files("fashion-mnist", tmp_path) is None
    with pytest.raises(UserError, match="not found"):
        load_mnist_family("fashion-mnist", data_dir=tmp_path, download=False)


def test_torchvision_layout_under_the_cache_root(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path / "cache" / "FashionMNIST" / "raw", gz=True)
    check_bundle(load_mnist_family("fashion-mnist", download=False), arrays)


def test_plain_file_preferred_over_gz_beside_it(tmp_path: Path) -> None:
    arrays = write_dataset(tmp_path, gz=False)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip file")
    check_bundle(load_mnist_family("mnist", data_dir=tmp_path, download=False), arrays)


def test_load_dataset_gives_the_split_sizes(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=True, n_train=60, n_test=30)
    bundle = load_dataset("fashion-mnist", data_dir=tmp_path, download=False)
    assert bundle.describe() == {
        "name": "fashion-mnist",
        "train": 54,
        "val": 6,
        "test": 30,
        "num_classes": 10,
        "input_shape": [1, 28, 28],
    }


def test_files_that_do_not_belong_together(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes([1] * 49, (49,)))
    with pytest.raises(UserError, match="50 images but .* 49 labels"):
        load_mnist_family("mnist", data_dir=tmp_path, download=False)
    labels.write_bytes(idx_bytes([1] * 49 + [10], (50,)))
    with pytest.raises(UserError, match="label 10"):
        load_mnist_family("mnist", data_dir=tmp_path, download=False)
    labels.write_bytes(idx_bytes(list(range(100)), (50, 2)))
    with pytest.raises(UserError, match="declares 2 dimension.* where a labels file has 1"):
        load_mnist_family("mnist", data_dir=tmp_path, download=False)
    # The images file given as labels: named as such, not as a file of the wrong length.
    labels.write_bytes((tmp_path / "train-images-idx3-ubyte").read_bytes())
    with pytest.raises(UserError, match="where a labels file has 1: is it the images file"):
        load_mnist_family("mnist", data_dir=tmp_path, download=False)


def test_too_few_training_images(tmp_path: Path) -> None:
    write_dataset(tmp_path, gz=False, n_train=9)
    with pytest.raises(UserError, match="holds 9 images; at least 10"):
        load_mnist_family("mnist", data_dir=tmp_path, download=False)


def test_unknown_name() -> None:
    with pytest.raises(UserError, match="unknown MNIST-family dataset"):
        load_mnist_family("cifar", download=False)


def test_missing_files_without_download_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_mnist_family("fashion-mnist", data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert f"in {tmp_path / 'nowhere'} " in message
    for stem in IDX_FILES:
        assert f"{stem}.gz" in message
    assert "--data-dir" not in message  # it was given: the advice is where to put the files


# --- the cache folder and downloads --------------------------------------------------


def test_cache_dir_from_env_and_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir("mnist") == tmp_path / "cache" / "mnist"
    monkeypatch.delenv("VGDIAG_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir("fashion-mnist") == tmp_path / "home" / ".cache" / "vgdiag" / "fashion-mnist"


def test_download_into_cache_then_load_offline(tmp_path: Path, mirror) -> None:
    url, arrays, checksums = mirror
    bundle = load_mnist_family("fashion-mnist", mirrors=[url], checksums=checksums)
    check_bundle(bundle, arrays)
    cache = tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == sorted(checksums)
    for name, md5 in checksums.items():
        assert md5_of(cache / name) == md5
    # Now offline (the autouse mirror is a closed port): the cache serves.
    check_bundle(load_mnist_family("fashion-mnist", download=True), arrays)


def test_download_into_the_given_data_dir(tmp_path: Path, mirror) -> None:
    url, arrays, checksums = mirror
    target = tmp_path / "mine"
    check_bundle(
        load_mnist_family("mnist", data_dir=target, mirrors=[url], checksums=checksums), arrays
    )
    assert sorted(p.name for p in target.iterdir()) == sorted(checksums)


def test_only_missing_files_are_downloaded(tmp_path: Path, mirror) -> None:
    url, arrays, checksums = mirror
    target = tmp_path / "partial"
    write_dataset(target, gz=False)  # the same arrays (seed 0)
    (target / "t10k-labels-idx1-ubyte").unlink()
    written = download_mnist_family(
        "mnist", target, files=["t10k-labels-idx1-ubyte"], mirrors=[url], checksums=checksums
    )
    assert written == [target / "t10k-labels-idx1-ubyte.gz"]
    check_bundle(
        load_mnist_family("mnist", data_dir=target, mirrors=[url], checksums=checksums), arrays
    )


def test_mirror_from_environment(tmp_path: Path, mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    url, arrays, checksums = mirror
    monkeypatch.setenv("VGDIAG_MNIST_MIRROR", f"{closed_port_url()},{url}")
    check_bundle(load_mnist_family("mnist", checksums=checksums), arrays)


def test_wrong_checksum_raises_and_leaves_no_file(tmp_path: Path, mirror) -> None:
    url, _, checksums = mirror
    bad = dict(checksums, **{"t10k-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(UserError, match="checksum mismatch: expected md5 0{32}") as info:
        load_mnist_family("fashion-mnist", mirrors=[url], checksums=bad)
    assert "\n" not in str(info.value)
    cache = tmp_path / "cache" / "fashion-mnist"
    names = [p.name for p in cache.iterdir()]
    assert "t10k-images-idx3-ubyte.gz" not in names
    assert not [n for n in names if n.endswith(".part")]


def test_published_checksums_reject_other_files(tmp_path: Path, mirror) -> None:
    url, _, _ = mirror
    with pytest.raises(UserError, match="8d4fb7e6c68d591d4c3dfef9ec88bf0d"):
        download_mnist_family("fashion-mnist", tmp_path / "dl", mirrors=[url])
    assert list((tmp_path / "dl").iterdir()) == []


def test_offline_error_names_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_mnist_family("fashion-mnist", mirrors=[closed_port_url()], timeout=5)
    message = str(info.value)
    cache = tmp_path / "cache" / "fashion-mnist"
    assert "\n" not in message
    assert message.startswith(f"fashion-mnist files not found in {cache} and download failed (")
    assert "refused" in message.lower()
    assert f"in {cache} or pass --data-dir" in message
    for stem in IDX_FILES:
        assert f"{stem}.gz" in message
    assert not cache.exists()  # the failed download left no folder behind


def test_a_failed_download_into_a_new_data_dir_leaves_no_folders(tmp_path: Path) -> None:
    target = tmp_path / "new" / "data"
    with pytest.raises(UserError) as info:
        load_mnist_family("mnist", data_dir=target, mirrors=[closed_port_url()], timeout=5)
    assert f"in {target}" in str(info.value) and "pass --data-dir" not in str(info.value)
    assert not (tmp_path / "new").exists()


def test_http_error_is_reported(tmp_path: Path, serve) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="HTTP Error 404"):
        load_mnist_family("mnist", mirrors=[serve(empty)])


class ShortBodyHandler(http.server.BaseHTTPRequestHandler):
    """Promises a long body, sends a little, hangs up: an interrupted download."""

    def __init__(self, *args: object, directory: str = "", **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"x" * 1000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_interrupted_download_leaves_no_file(tmp_path: Path, serve) -> None:
    url = serve(tmp_path, ShortBodyHandler)
    dest = tmp_path / "dl"
    with pytest.raises(UserError, match="closed after 1002 of 100000 bytes") as info:
        download_mnist_family("mnist", dest, mirrors=[url])
    assert "could not download train-images-idx3-ubyte.gz" in str(info.value)
    assert list(dest.iterdir()) == []


def test_stalled_server_times_out(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)  # accepts connections in the kernel, never answers
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(UserError, match="timed out"):
            download_mnist_family("mnist", tmp_path / "dl", mirrors=[url], timeout=0.3)
    assert list((tmp_path / "dl").iterdir()) == []
