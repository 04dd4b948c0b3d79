"""The CIFAR-10 loader: folder layouts and archives, the restricted unpickler, download,
split, and `vgdiag run --data cifar10`."""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from local_http import closed_port_url, md5_of

from vgdiag.errors import UserError
from vgdiag.inputs.cifar import (
    BATCHES,
    BIN_ARCHIVE,
    BIN_ARCHIVE_MD5,
    PY_ARCHIVE,
    cache_dir,
    download_cifar10,
    find_cifar_files,
    load_cifar10,
    parse_pickled_batch,
)
from vgdiag.inputs.datasets import DATA_DEFAULTS, DATASETS, load_dataset
from vgdiag.inputs.mnist import split_train_val

N_PER_BATCH, N_TEST = 8, 10  # five training batches: 40 images, split 36 / 4
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
ALL = (*TRAIN, "test_batch")


# --- writers of our own, independent of the reader ---------------------------------


def make_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Batch name -> (images (N, 3, 32, 32) uint8, labels (N,) uint8)."""
    rng = np.random.default_rng(seed)
    return {
        stem: (
            rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, 10, n, dtype=np.uint8),
        )
        for stem, n in ((s, N_TEST if s == "test_batch" else N_PER_BATCH) for s in ALL)
    }


def pickle_bytes(images: np.ndarray, labels, protocol: int = 2) -> bytes:
    # The python version's fields, with bytes keys as Python 2's cPickle left them.
    batch = {
        b"batch_label": b"a fake batch",
        b"labels": [int(v) for v in labels],
        b"data": images.reshape(len(images), -1),
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=protocol)


def py2_pickle_bytes(images: np.ndarray, labels) -> bytes:
    """The opcodes Python 2's cPickle (protocol 2) wrote for the published batches:
    byte strings, and numpy's names as numpy 1 had them (numpy.core.multiarray)."""

    def string(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b

    def integer(n: int) -> bytes:
        if 0 <= n < 256:
            return b"K" + bytes([n])
        return b"M" + struct.pack("<H", n) if 0 <= n < 65536 else b"J" + struct.pack("<i", n)

    n = len(images)
    minus_one = b"J" + struct.pack("<i", -1)
    dtype = (b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
             + b"(" + integer(3) + string(b"|") + b"NNN" + minus_one + minus_one + integer(0)
             + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85"
             + string(b"b") + b"\x87R" + b"(" + integer(1) + integer(n) + integer(3072)
             + b"\x86" + dtype + b"\x89" + string(images.reshape(n, -1).tobytes()) + b"tb")
    labels_list = b"](" + b"".join(integer(int(v)) for v in labels) + b"e"
    return (b"\x80\x02}(" + string(b"batch_label") + string(b"a fake batch") + string(b"data")
            + array + string(b"labels") + labels_list + b"u.")


def binary_bytes(images: np.ndarray, labels) -> bytes:
    # One record per image: the label byte, then 1024 red, 1024 green, 1024 blue bytes.
    return b"".join(bytes([int(lab)]) + img.tobytes() for img, lab in zip(images, labels))


def batch_files(arrays, binary: bool, protocol: int = 2) -> dict[str, bytes]:
    if binary:
        return {f"{stem}.bin": binary_bytes(*arrays[stem]) for stem in ALL}
    return {stem: pickle_bytes(*arrays[stem], protocol=protocol) for stem in ALL}


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def write_archive(path: Path, folder: str, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"batches.meta.txt" if folder.endswith("bin") else "batches.meta": b"meta"}
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        for name, data in {**extra, **files}.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_layout(root: Path, layout: str, arrays, protocol: int = 2) -> None:
    if layout == "py-torchvision":
        write_folder(root / "cifar-10-batches-py", batch_files(arrays, False, protocol))
    elif layout == "bin-folder":
        write_folder(root / "cifar-10-batches-bin", batch_files(arrays, True))
    elif layout == "py-plain":
        write_folder(root, batch_files(arrays, False, protocol))
    elif layout == "bin-plain":
        write_folder(root, batch_files(arrays, True))
    elif layout == "py-archive":
        write_archive(root / PY_ARCHIVE, "cifar-10-batches-py", batch_files(arrays, False))
    elif layout == "bin-archive":
        write_archive(root / BIN_ARCHIVE, "cifar-10-batches-bin", batch_files(arrays, True))
    else:
        raise AssertionError(layout)


LAYOUTS = ["py-torchvision", "bin-folder", "py-plain", "bin-plain", "py-archive", "bin-archive"]


def check_bundle(bundle, arrays, seed: int = 42) -> None:
    images = np.concatenate([arrays[stem][0] for stem in TRAIN])
    labels = np.concatenate([arrays[stem][1] for stem in TRAIN])
    train_idx, val_idx = split_train_val(len(labels), seed)
    assert bundle.name == "cifar10"
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (36, 4, N_TEST)
    assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 10
    for split, idx in ((bundle.train, train_idx), (bundle.val, val_idx)):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape == (len(idx), 3, 32, 32)
        expected = images[idx.numpy()].astype(np.float64) / 255.0
        np.testing.assert_allclose(split.x.numpy(), expected, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(split.y.numpy(), labels[idx.numpy()])
    test_images, test_labels = arrays["test_batch"]
    np.testing.assert_allclose(bundle.test.x.numpy(), test_images / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(bundle.test.y.numpy(), test_labels)
    assert float(bundle.train.x.min()) >= 0.0 and float(bundle.train.x.max()) <= 1.0


@pytest.fixture
def mirror(tmp_path: Path, serve) -> tuple[str, dict, str]:
    """A mirror serving a fake binary archive: (base URL, arrays written, its md5)."""
    arrays = make_arrays()
    archive = write_archive(
        tmp_path / "mirror" / BIN_ARCHIVE, "cifar-10-batches-bin", batch_files(arrays, True)
    )
    return serve(archive.parent), arrays, md5_of(archive)


@pytest.fixture(autouse=True)
def no_real_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never touch the user's cache or the network from a test.
    monkeypatch.setenv("VGDIAG_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VGDIAG_CIFAR_MIRROR", closed_port_url())


# --- layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_gives_the_pixels_and_labels_written(tmp_path: Path, layout: str) -> None:
    arrays = make_arrays()
    write_layout(tmp_path / "data", layout, arrays)
    check_bundle(load_cifar10(data_dir=tmp_path / "data", download=False), arrays)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_every_protocol_load(tmp_path: Path, protocol: int) -> None:
    arrays = make_arrays(seed=protocol)
    write_layout(tmp_path, "py-plain", arrays, protocol=protocol)
    check_bundle(load_cifar10(data_dir=tmp_path, download=False), arrays)


def test_python2_pickles_as_published_load(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_folder(tmp_path, {stem: py2_pickle_bytes(*arrays[stem]) for stem in ALL})
    check_bundle(load_cifar10(data_dir=tmp_path, download=False), arrays)


def test_str_keys_and_array_labels_load(tmp_path: Path) -> None:
    # A batch re-saved by Python 3 (str keys, labels as an array) is the same batch.
    arrays = make_arrays()
    files = {
        stem: pickle.dumps({"data": images.reshape(len(images), -1), "labels": labels})
        for stem, (images, labels) in arrays.items()
    }
    write_folder(tmp_path, files)
    check_bundle(load_cifar10(data_dir=tmp_path, download=False), arrays)


def test_seed_changes_the_split(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_layout(tmp_path, "bin-plain", arrays)
    a = load_cifar10(data_dir=tmp_path, seed=1, download=False)
    b = load_cifar10(data_dir=tmp_path, seed=2, download=False)
    check_bundle(a, arrays, seed=1)
    check_bundle(b, arrays, seed=2)
    assert not torch.equal(a.train.x, b.train.x)


def test_the_real_split_is_45000_5000() -> None:
    train_idx, val_idx = split_train_val(50_000, 42)
    assert (len(train_idx), len(val_idx)) == (45_000, 5_000)
    assert len(set(train_idx.tolist()) | set(val_idx.tolist())) == 50_000


def test_load_dataset_and_defaults(tmp_path: Path) -> None:
    write_layout(tmp_path, "py-archive", make_arrays())
    bundle = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert bundle.describe() == {
        "name": "cifar10",
        "train": 36,
        "val": 4,
        "test": N_TEST,
        "num_classes": 10,
        "input_shape": [3, 32, 32],
    }
    assert "cifar10" in DATASETS
    defaults = DATA_DEFAULTS["cifar10"]
    assert (defaults.epochs, defaults.batch_size, defaults.sgd_lr) == (100, 512, 0.01)


def test_cache_folder_and_torchvision_root_beside_it(tmp_path: Path) -> None:
    assert cache_dir() == tmp_path / "cache" / "cifar10"
    arrays = make_arrays()
    write_layout(tmp_path / "cache" / "cifar10", "bin-archive", arrays)
    check_bundle(load_cifar10(download=False), arrays)
    (tmp_path / "cache" / "cifar10" / BIN_ARCHIVE).unlink()
    write_layout(tmp_path / "cache", "py-torchvision", arrays)  # torchvision's root
    check_bundle(load_cifar10(download=False), arrays)


def test_files_are_preferred_over_an_archive_beside_them(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_layout(tmp_path, "py-plain", arrays)
    (tmp_path / BIN_ARCHIVE).write_bytes(b"not an archive")
    found = find_cifar_files(tmp_path)
    assert found is not None and found.path == tmp_path and not found.binary
    check_bundle(load_cifar10(data_dir=tmp_path, download=False), arrays)


def test_a_missing_batch_is_not_a_dataset(tmp_path: Path) -> None:
    write_layout(tmp_path, "bin-plain", make_arrays())
    (tmp_path / "data_batch_3.bin").unlink()
    assert find_cifar_files(tmp_path) is None
    # Named, and nothing downloaded over the five that are there.
    with pytest.raises(UserError) as excinfo:
        load_cifar10(data_dir=tmp_path, mirrors=["http://127.0.0.1:9/"])
    assert str(excinfo.value) == (
        f"{tmp_path} holds 5 of the 6 CIFAR-10 batches; missing: data_batch_3.bin: copy "
        "them there (or empty the folder to download the dataset again)")


def test_a_file_that_is_no_pickle_is_named_plainly(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for stem in BATCHES:
        (folder / stem).write_text("just some text, not a pickle\n" * 10)
    with pytest.raises(UserError) as excinfo:
        load_cifar10(data_dir=tmp_path, download=False)
    assert str(excinfo.value).endswith("is not a CIFAR-10 batch file (not a readable pickle); "
                                       "download it again")


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    from vgdiag.inputs.recipe import RunOptions

    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="is a file: give the folder"):
        RunOptions(data="cifar10", data_dir=tmp_path / "f").validate()


# --- the restricted unpickler --------------------------------------------------------


class Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('echo pwned')",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_a_pickle_that_would_run_a_command_is_refused(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], protocol: int
) -> None:
    marker = tmp_path / "pwned"
    write_layout(tmp_path / "data", "py-plain", make_arrays())
    evil = pickle.dumps(
        {b"data": Evil(f"echo pwned > {marker}; echo pwned"), b"labels": []}, protocol=protocol
    )
    (tmp_path / "data" / "data_batch_2").write_bytes(evil)
    with pytest.raises(UserError) as info:
        load_cifar10(data_dir=tmp_path / "data", download=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'data' / 'data_batch_2'} is not a CIFAR-10 batch file")
    assert "system" in message and "nothing in it was run" in message
    assert not marker.exists()
    assert "pwned" not in capfd.readouterr().out


def test_eval_and_other_modules_are_refused(tmp_path: Path, capfd) -> None:
    for payload in (EvalEvil(), Evil("echo pwned"), pickle.loads):
        with pytest.raises(UserError, match="is not a CIFAR-10 batch file: it asks for"):
            parse_pickled_batch(pickle.dumps({"data": payload, "labels": []}), "batch")
    assert "pwned" not in capfd.readouterr().out


def test_an_evil_pickle_inside_an_archive_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = batch_files(make_arrays(), False)
    files["test_batch"] = pickle.dumps(Evil(f"touch {marker}"))
    archive = write_archive(tmp_path / PY_ARCHIVE, "cifar-10-batches-py", files)
    with pytest.raises(UserError, match="member cifar-10-batches-py/test_batch is not a CIFAR"):
        load_cifar10(data_dir=archive.parent, download=False)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"garbage, not a pickle", "is not a CIFAR-10 batch file ("),
        (pickle.dumps([1, 2, 3]), "holds a list, not a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1, 2]}),
         "(a CIFAR-100 file?)"),
        (pickle.dumps({b"data": np.zeros((2, 3071), np.uint8), b"labels": [1, 2]}),
         "holds uint8 data of shape (2, 3071) as its images; expected unsigned bytes (N, 3072)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}),
         "holds float32 data"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]}),
         "holds 2 images but labels of shape (3,)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}),
         "has label 10; CIFAR-10 labels are 0..9"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [-1, 0]}),
         "has label -1; CIFAR-10 labels are 0..9"),
    ],
)
def test_bad_pickled_batches_name_the_file(tmp_path: Path, data: bytes, words: str) -> None:
    write_layout(tmp_path, "py-plain", make_arrays())
    (tmp_path / "data_batch_4").write_bytes(data)
    with pytest.raises(UserError) as info:
        load_cifar10(data_dir=tmp_path, download=False)
    assert str(info.value).startswith(str(tmp_path / "data_batch_4"))
    assert words in str(info.value)


def test_bad_binary_batches_name_the_file(tmp_path: Path) -> None:
    arrays = make_arrays()
    write_layout(tmp_path, "bin-plain", arrays)
    images, labels = arrays["test_batch"]
    bad_labels = labels.copy()
    bad_labels[3] = 11
    (tmp_path / "test_batch.bin").write_bytes(binary_bytes(images, bad_labels))
    with pytest.raises(UserError, match=r"test_batch\.bin has label 11; CIFAR-10 labels are"):
        load_cifar10(data_dir=tmp_path, download=False)
    (tmp_path / "test_batch.bin").write_bytes(binary_bytes(images, labels)[:-1])
    with pytest.raises(UserError, match=r"test_batch\.bin is not a CIFAR-10 binary batch: "
                                        r"30729 bytes is not a whole number of 3073-byte"):
        load_cifar10(data_dir=tmp_path, download=False)


def test_bad_archives(tmp_path: Path) -> None:
    files = batch_files(make_arrays(), True)
    del files["data_batch_5.bin"]
    write_archive(tmp_path / "a" / BIN_ARCHIVE, "cifar-10-batches-bin", files)
    with pytest.raises(UserError, match=r"lacks data_batch_5\.bin: is it the binary version"):
        load_cifar10(data_dir=tmp_path / "a", download=False)
    # the python archive's name, holding the binary files
    write_archive(tmp_path / "b" / PY_ARCHIVE, "cifar-10-batches-bin", files)
    with pytest.raises(UserError, match="lacks data_batch_1, .*python version"):
        load_cifar10(data_dir=tmp_path / "b", download=False)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / BIN_ARCHIVE).write_bytes(b"\x1f\x8b" + b"x" * 100)
    with pytest.raises(UserError, match="is not a readable archive .*download it again"):
        load_cifar10(data_dir=tmp_path / "c", download=False)


# --- downloads -----------------------------------------------------------------------


def test_download_into_cache_then_load_offline(tmp_path: Path, mirror) -> None:
    url, arrays, md5 = mirror
    check_bundle(load_cifar10(mirrors=[url], md5=md5), arrays)
    cache = tmp_path / "cache" / "cifar10"
    assert [p.name for p in cache.iterdir()] == [BIN_ARCHIVE]
    assert md5_of(cache / BIN_ARCHIVE) == md5
    # Now offline (the autouse mirror is a closed port): the cache serves.
    check_bundle(load_cifar10(download=True), arrays)


def test_download_into_the_given_data_dir_from_the_env_mirror(
    tmp_path: Path, mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, arrays, md5 = mirror
    monkeypatch.setenv("VGDIAG_CIFAR_MIRROR", f"{closed_port_url()},{url}")
    target = tmp_path / "mine"
    check_bundle(load_cifar10(data_dir=target, md5=md5), arrays)
    assert [p.name for p in target.iterdir()] == [BIN_ARCHIVE]


def test_wrong_checksum_raises_and_leaves_no_file(tmp_path: Path, mirror) -> None:
    url, _, _ = mirror
    target = tmp_path / "dl"
    with pytest.raises(UserError, match="checksum mismatch: expected md5 0{32}") as info:
        load_cifar10(data_dir=target, mirrors=[url], md5="0" * 32)
    assert "\n" not in str(info.value)
    assert not target.exists()  # no archive, no .part, and the new folder removed again
    # The published checksum rejects the fake archive too, and nothing stays.
    with pytest.raises(UserError, match=BIN_ARCHIVE_MD5):
        download_cifar10(target, mirrors=[url])
    assert list(target.iterdir()) == []


def test_offline_error_names_the_folder_and_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_cifar10(mirrors=[closed_port_url()], timeout=5)
    message = str(info.value)
    cache = tmp_path / "cache" / "cifar10"
    assert "\n" not in message
    assert message.startswith(f"cifar10 files not found in {cache} and download failed (")
    assert "refused" in message.lower()
    assert f"in {cache} or pass --data-dir" in message
    assert BIN_ARCHIVE in message and PY_ARCHIVE in message
    assert not cache.exists()


def test_download_off_says_where_to_put_the_files(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_cifar10(data_dir=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    folder = tmp_path / "nowhere"
    assert message.startswith(f"cifar10 files not found in {folder} (download is off): put ")
    assert f"in {folder}" in message and BIN_ARCHIVE in message
    assert "cifar-10-batches-py/" in message
    assert "--data-dir" not in message  # it was given: the advice is where to put the files


def test_http_error_is_reported(tmp_path: Path, serve) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="HTTP Error 404"):
        load_cifar10(mirrors=[serve(empty)])


# --- options and the CLI -------------------------------------------------------------


def test_options_take_data_dir_for_cifar10(tmp_path: Path) -> None:
    from vgdiag.inputs.options import RunOptions
    from vgdiag.inputs.recipe import build_experiment, load_data

    write_layout(tmp_path, "bin-archive", make_arrays())
    opts = RunOptions(data="cifar10", data_dir=tmp_path, depth=2, width=16, device="cpu")
    opts.validate()
    bundle = load_data(opts)
    experiment = build_experiment(opts, bundle)
    model = experiment.model_factory()
    assert model[1].in_features == 3 * 32 * 32
    assert model(bundle.train.x[:4]).shape == (4, 10)
    with pytest.raises(UserError, match="--data-dir applies to --data mnist, fashion-mnist and "
                                        "cifar10, not digits"):
        RunOptions(data="digits", data_dir=tmp_path).validate()


def test_cli_run_on_cifar10(tmp_path: Path) -> None:
    write_layout(tmp_path / "data", "bin-folder", make_arrays())
    out = tmp_path / "run"
    env = dict(os.environ, VGDIAG_DATA_DIR=str(tmp_path / "cache"),
               VGDIAG_CIFAR_MIRROR=closed_port_url())
    proc = subprocess.run(
        [sys.executable, "-m", "vgdiag", "run", "--headless", "--data", "cifar10",
         "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--depth", "2",
         "--width", "16", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "summary.json").is_file()


FORGED_DTYPE = """
import pickle, sys
import numpy as np
from numpy._core.numeric import _frombuffer  # what numpy 2 pickles arrays with

class R:
    def __init__(self, f, a, st=None):
        self.f, self.a, self.st = f, a, st

    def __reduce__(self):
        return (self.f, self.a) if self.st is None else (self.f, self.a, self.st)

# A dtype whose pickled state claims two object fields but clears the flag that says
# so: numpy would then read pointers from the file's bytes (0x4141...).
obj = R(np.dtype, ("O", False, True))
forged = R(np.dtype, ("V16", False, True),
           (3, "|", None, ("a", "b"), {"a": (obj, 0), "b": (obj, 8)}, 16, 1, 0))
array = R(_frombuffer, (b"A" * 16, forged, (1,), "C"))
data = pickle.dumps({"data": R(dict, (array,)), "labels": [0]}, protocol=2)
from vgdiag.errors import UserError
from vgdiag.inputs.cifar import parse_pickled_batch
try:
    parse_pickled_batch(data, "forged")
except UserError as exc:
    print(exc)
"""


def test_a_forged_dtype_builds_no_array_over_memory() -> None:
    # In a subprocess: a regression would crash the interpreter, not fail an assert.
    proc = subprocess.run([sys.executable, "-c", FORGED_DTYPE], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("forged is not a CIFAR-10 batch file")
