"""Bad data is stopped before training: one line, exit 2, no traceback, no run folder.

Negative or stray class labels, splits whose inputs the model cannot take, NaN/inf in
the inputs (or regression targets), and a learning rate no float32 optimizer can use.
Every case runs the real CLI in its own process; the processes run a few at a time,
started once for the module, so the file stays fast on a small machine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import ExitCode, UserError
from vgdiag.inputs.datacheck import find_non_finite
from vgdiag.inputs.options import RunOptions
from vgdiag.inputs.shapecheck import check_shapes

DATA = """
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    def _base(n=200, shape=(1, 8, 8), seed=0):
        g = torch.Generator().manual_seed(seed)
        return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)

    class Items(Dataset):  # map-style: stacked into tensors by vgdiag
        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], self.y[i]

    def good():
        x, y = _base()
        return Items(x[:150], y[:150]), Items(x[150:], y[150:]), Items(x[:20], y[:20])

    def negative_label():
        x, y = _base()
        y[37] = -1
        return TensorDataset(x[:150], y[:150]), TensorDataset(x[150:], y[150:])

    def stray_label():
        x, y = _base()
        y[37] = 15
        return TensorDataset(x[:150], y[:150]), TensorDataset(x[150:], y[150:])

    def negative_label_in_a_loader():
        x, y = _base()
        y[3] = -2
        train = DataLoader(TensorDataset(x[:150], y[:150]), batch_size=32)
        return train, TensorDataset(x[150:], y[150:])

    def val_shape():
        x, y = _base()
        xv, yv = _base(50, (1, 7, 7), seed=1)
        return TensorDataset(x, y), TensorDataset(xv, yv)

    def test_shape():
        x, y = _base()
        xt, yt = _base(20, (1, 9, 9), seed=2)
        return Items(x[:150], y[:150]), Items(x[150:], y[150:]), Items(xt, yt)

    def val_loader_shape():
        x, y = _base()
        xv, yv = _base(50, (1, 7, 7), seed=1)
        return TensorDataset(x, y), DataLoader(TensorDataset(xv, yv), batch_size=16)

    def nan_pixel():
        x, y = _base()
        x[123, 0, 3, 3] = float("nan")
        x[140, 0, 0, 0] = float("inf")
        return Items(x[:150], y[:150]), Items(x[150:], y[150:])

    def inf_in_val():
        x, y = _base()
        x[160, 0, 0, 0] = float("-inf")
        return (x[:150], y[:150]), (x[150:], y[150:])

    def nan_target():
        x = torch.randn(100, 4)
        y = x.sum(1, keepdim=True)
        y[5, 0] = float("nan")
        return (x[:80], y[:80]), (x[80:], y[80:])

    def lenient():
        # All fine for the model below: -100 is cross-entropy's ignore_index, the
        # validation inputs are flattened (the model flattens), and the model cleans NaN.
        x, y = _base()
        y[3] = -100
        x[10, 0, 0, 0] = float("nan")
        return TensorDataset(x[:150], y[:150]), TensorDataset(x[150:].flatten(1), y[150:])
"""

MODEL = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

        def forward(self, x):
            return self.net(x)

    class CleansNaN(Net):
        def forward(self, x):
            return self.net(x.nan_to_num())

    class Regression(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 1)

        def forward(self, x):
            return self.linear(x)
"""

# case: (factory or None, extra options, words that must be in the one line)
BAD = {
    "negative label": ("negative_label", [], [
        "1 of 150 training targets is -1 (sample 37)", "cross-entropy needs class labels 0..9",
        "fix or drop it"]),
    "stray label": ("stray_label", [], [
        "1 of 150 training targets is 15 (sample 37)", "beyond the model's 10 classes",
        "looks wrong"]),
    "negative label in a loader": ("negative_label_in_a_loader", [], [
        "1 of the first 32 training targets is -2", "cross-entropy needs class labels"]),
    "val shape": ("val_shape", [], [
        "the validation inputs have shape (1, 7, 7) but the training inputs (1, 8, 8)",
        "give every split inputs of the training shape"]),
    "test shape": ("test_shape", [], [
        "the test inputs have shape (1, 9, 9) but the training inputs (1, 8, 8)"]),
    "val loader shape": ("val_loader_shape", [], ["the validation inputs have shape (1, 7, 7)"]),
    "nan pixel": ("nan_pixel", [], [
        "the training inputs hold NaN at sample 123 (and 1 more): clean or drop them"]),
    "inf in val": ("inf_in_val", [], [
        "the validation inputs hold inf at sample 10: clean or drop them"]),
    "nan target": ("nan_target", ["--model", "{dir}/model.py:Regression", "--loss", "mse"], [
        "the training targets hold NaN at sample 5"]),
    "lr 1e308": (None, ["--lr", "1e308"], ["--lr must be a positive number no larger than 1e6"]),
}
GOOD = {
    "good": ("good", []),
    "lenient": ("lenient", ["--model", "{dir}/model.py:CleansNaN"]),
}


def _command(folder: Path, factory: str | None, extra: list[str], out: Path) -> list[str]:
    args = [sys.executable, "-m", "vgdiag", "run", "--headless", "--epochs", "1",
            "--out", str(out)]
    if factory is not None:
        args += ["--model", f"{folder}/model.py:Net", "--data", f"{folder}/data.py:{factory}"]
    # A later --model overrides the default one above.
    return args + [a.format(dir=folder) for a in extra]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Any]]:
    folder = tmp_path_factory.mktemp("datachecks")
    (folder / "data.py").write_text(textwrap.dedent(DATA))
    (folder / "model.py").write_text(textwrap.dedent(MODEL))
    cases = {name: (factory, extra) for name, (factory, extra, _) in BAD.items()} | GOOD

    def one(name: str) -> tuple[Path, Path, Any]:
        factory, extra = cases[name]
        cwd = folder / name.replace(" ", "-")
        cwd.mkdir()
        out = cwd / "out"
        done = subprocess.run(_command(folder, factory, extra, out), cwd=cwd,
                              capture_output=True, text=True, timeout=300)
        return cwd, out, done

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(cases, pool.map(one, cases), strict=True))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_one_line_exit_2_and_no_folder(results, case):
    cwd, out, done = results[case]
    err = done.stderr
    assert done.returncode == ExitCode.BAD_INPUT, err
    assert err.count("\n") == 1 and err.startswith("vgdiag: error: "), err
    assert "Traceback" not in err and "training failed" not in err
    for words in BAD[case][2]:
        assert words in err, err
    assert not out.exists() and not (cwd / "runs").exists()


def test_a_stray_label_does_not_ask_for_a_wider_layer(results):
    err = results["stray label"][2].stderr
    assert "change the model's last layer" not in err
    assert "if 15 is a real class, give the model's last layer 16 outputs" in err


@pytest.mark.parametrize("case", list(GOOD))
def test_valid_data_still_trains(results, case):
    _, out, done = results[case]
    assert done.returncode == ExitCode.OK, done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "metrics.jsonl").exists()


# ------------------------------------------------------------------ cost, in-process


def test_non_finite_values_in_60k_images_are_found_with_their_samples():
    x = torch.rand(60_000, 1, 28, 28)
    assert find_non_finite(x) is None
    x[59_999, 0, 27, 27] = float("nan")
    x[7, 0, 0, 0] = float("inf")
    found = find_non_finite(x)
    assert found is not None and found.samples.tolist() == [7, 59_999]
    assert found.message("train", "inputs") == (
        "the training inputs hold inf at sample 7 (and 1 more): clean or drop them")
    # (what the check costs: python bench/data_check.py)


def test_clean_data_of_reference_size_passes_the_whole_check():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(60_000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (60_000,), generator=g)
    bundle = DataBundle("big", TensorSplit(x, y), TensorSplit(x[:10_000], y[:10_000]),
                        TensorSplit(x[:10_000], y[:10_000]), 10, (1, 28, 28))
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert check_shapes(model, bundle, "cross-entropy") == []


# ------------------------------------------------------------------ in-process details


def _bundle(y: torch.Tensor) -> DataBundle:
    x = torch.randn(len(y), 4)
    train, val = TensorSplit(x[:-20], y[:-20]), TensorSplit(x[-20:], y[-20:])
    return DataBundle("labels", train, val, None, int(y.max()) + 1, (4,))


def _error(model: nn.Module, bundle: DataBundle) -> str:
    with pytest.raises(UserError) as caught:
        check_shapes(model, bundle, "cross-entropy")
    return str(caught.value)


def test_many_labels_beyond_the_outputs_still_ask_for_a_wider_layer():
    y = torch.arange(320) % 16  # 16 real classes, 120 targets of 10..15
    assert _error(nn.Linear(4, 10), _bundle(y)) == (
        "the model outputs 10 classes but the data has 16 (targets 0..15): "
        "change the model's last layer to 16 outputs")


def test_a_few_stray_labels_in_two_splits_are_named_with_their_counts():
    y = torch.arange(2_000) % 10
    y[[5, 6, 1_990]] = torch.tensor([12, 15, 11])
    assert _error(nn.Linear(4, 10), _bundle(y)) == (
        "2 of 1,980 training targets are 12 or 15 (first at sample 5); 1 of 20 validation "
        "targets is 11 (sample 10), beyond the model's 10 classes (0..9): those labels look "
        "wrong, fix or drop them (if 15 is a real class, give the model's last layer 16 "
        "outputs)")


def test_stray_labels_in_a_small_dataset_are_still_strays():
    # 200 samples, 20 a class: 4 stray targets in all, but each value is 2 of them.
    y = torch.arange(200) % 10
    y[[3, 7, 190, 195]] = torch.tensor([11, 12, 11, 12])
    err = _error(nn.Linear(4, 10), _bundle(y))
    assert "those labels look wrong, fix or drop them" in err
    # As many of one value as a class holds: a class the model lacks.
    y = torch.arange(220) % 11
    assert "change the model's last layer to 11 outputs" in _error(nn.Linear(4, 10), _bundle(y))


def test_ignore_index_is_not_a_negative_label():
    y = torch.arange(200) % 10
    y[0] = -100
    assert check_shapes(nn.Linear(4, 10), _bundle(y), "cross-entropy") == []
    y[1] = -3
    assert _error(nn.Linear(4, 10), _bundle(y)).startswith(
        "1 of 180 training targets is -3 (sample 1): cross-entropy needs class labels 0..9")


@pytest.mark.parametrize("lr", [4e38, 1e7, 0.0, float("nan")])
def test_learning_rates_beyond_the_accepted_range(lr):
    with pytest.raises(UserError, match="--lr must be a positive number no larger than 1e6"):
        RunOptions(lr=lr).validate()


def test_the_largest_accepted_learning_rate():
    RunOptions(lr=1e6).validate()


def test_raw_pixel_inputs_are_named_as_unscaled_and_scaled_ones_are_not():
    y = torch.arange(200) % 4
    raw = _bundle(y)
    raw.train.x.copy_(torch.randint(0, 256, raw.train.x.shape).float())
    raw.train.x[0, 0] = 255.0
    (warning,) = check_shapes(nn.Linear(4, 4), raw, "cross-entropy")
    assert warning.startswith("the training inputs span 0 to 255") and "divide them by 255" \
        in warning
    signed = _bundle(y)
    signed.train.x.mul_(40)  # unscaled features of both signs
    (warning,) = check_shapes(nn.Linear(4, 4), signed, "cross-entropy")
    assert "standardise them" in warning
    assert check_shapes(nn.Linear(4, 4), _bundle(y), "cross-entropy") == []  # N(0, 1)


def test_labels_counted_from_one_are_named_as_shifted():
    y = torch.arange(1, 321) % 10 + 1  # 1..10
    assert _error(nn.Linear(4, 10), _bundle(y)) == (
        "the training labels run 1..10 and the model outputs 10 classes: cross-entropy "
        "wants labels 0..9; subtract 1 from the labels (no target is 0)")


def test_an_output_with_an_extra_axis_asks_to_pool_not_to_resize_the_layer():
    class Unpooled(nn.Module):  # forgot to pool over the 8 positions
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x).unsqueeze(1).expand(-1, 8, -1)

    message = _error(Unpooled(), _bundle(torch.arange(320) % 10))
    assert message.startswith("the model outputs shape (2, 8, 10) for one target per sample")
    assert "pool or select to (batch, classes)" in message


def test_float_labels_show_the_splits_shape_not_the_check_batchs():
    bundle = _bundle(torch.arange(320) % 10)
    bundle.train.y = bundle.train.y.float()
    message = _error(nn.Linear(4, 10), bundle)
    assert "float with shape (300,)" in message and "y.long()" in message


@pytest.mark.parametrize(("high", "advice"), [
    (254.969, "divide them by 255"),  # 8-bit pixels whose batch never reached 255
    (40_000.0, "divide them by 65535"), (1000.0, "divide them by 1000")])
def test_unscaled_inputs_are_told_their_full_scale(high, advice):
    from vgdiag.inputs.datacheck import raw_scale

    assert f": {advice}; " in raw_scale((0.0, high))
