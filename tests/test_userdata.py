"""The user's data, loss and output key, and the shape check before training."""

from __future__ import annotations

import textwrap
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vgdiag.engine.outputs import select_output
from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.errors import UserError
from vgdiag.inputs.datasets import load_dataset
from vgdiag.inputs.loader_split import LoaderSplit
from vgdiag.inputs.loading import load_model_factory
from vgdiag.inputs.losses import bce_with_logits, resolve_loss
from vgdiag.inputs.shapecheck import check_shapes
from vgdiag.inputs.userdata import load_user_data

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def user_error(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


# ------------------------------------------------------------------------- datasets

DATA = """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

    class Squares(Dataset):
        # Items are numpy float64 inputs and int32 targets: both get normalised.
        def __init__(self, n, offset=0):
            self.n, self.offset = n, offset

        def __len__(self):
            return self.n

        def __getitem__(self, i):
            k = i + self.offset
            return np.full((2, 3), k, dtype=np.float64), np.int32(k % 4)

    def tensors(seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(30, 5, generator=g)
        y = torch.randint(0, 3, (30,), generator=g)
        return TensorDataset(x[:20], y[:20]), TensorDataset(x[20:], y[20:])

    def custom(seed=None):
        return Squares(10), Squares(4, offset=10), Squares(6, offset=14)

    def uses_global_rng():
        perm = torch.randperm(10)
        x = torch.arange(10.0).unsqueeze(1)[perm]
        y = perm
        return (x[:8], y[:8]), (x[8:], y[8:])

    def as_dict():
        x = torch.zeros(6, 2)
        return {"train": (x, torch.arange(6)), "val": (x[:2], torch.arange(2))}

    def regression():
        x = torch.linspace(0, 1, 12, dtype=torch.float64).unsqueeze(1)
        return (x[:8], 2 * x[:8]), (x[8:], 2 * x[8:])

    class Labelled(TensorDataset):
        classes = ["a", "b", "c", "d", "e", "f", "g"]

    def loaders():
        x = torch.arange(40.0).reshape(20, 2)
        y = torch.arange(20) % 3
        train = DataLoader(Labelled(x, y), batch_size=6)
        val = DataLoader(TensorDataset(x[:5], y[:5]), batch_size=2)
        return train, val

    def scanned_loaders():
        x = torch.arange(40.0).reshape(20, 2)
        y = torch.arange(20) % 5
        return DataLoader(TensorDataset(x, y), batch_size=8), DataLoader(TensorDataset(x, y))

    class Stream(IterableDataset):
        def __iter__(self):
            for i in range(11):
                yield torch.tensor([float(i)]), i % 2

    def stream():
        return Stream(), Stream()

    def needs_path(path):
        return None

    def ragged():
        return [(torch.zeros(3), 0), (torch.zeros(4), 1)], [(torch.zeros(3), 0)]

    def not_pairs():
        return [(torch.zeros(3), 0, 5)], [(torch.zeros(3), 0)]

    def empty():
        one = TensorDataset(torch.zeros(1, 2), torch.zeros(1))
        return TensorDataset(torch.zeros(0, 2), torch.zeros(0)), one

    def one_thing():
        return TensorDataset(torch.zeros(2, 2), torch.zeros(2))

    def raises():
        x = 1
        raise FileNotFoundError("no such file: data.csv")

    def strings():
        return ["a", "b"], ["c"]
"""


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    return write(tmp_path, "userdata_file.py", DATA)


def test_tensor_datasets_become_tensor_splits(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:tensors", seed=3)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 5, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    assert isinstance(bundle.train, TensorSplit) and isinstance(bundle.val, TensorSplit)
    assert torch.equal(bundle.train.x, x[:20]) and torch.equal(bundle.val.y, y[20:])
    assert bundle.test is None
    assert bundle.name == "userdata_file:tensors"
    assert bundle.num_classes == int(y.max()) + 1
    assert bundle.input_shape == (5,)


def test_map_style_dataset_is_stacked_and_normalised(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:custom", seed=0)
    assert isinstance(bundle.train, TensorSplit)
    assert isinstance(bundle.test, TensorSplit)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 4, 6)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.int64
    assert bundle.input_shape == (2, 3)
    assert torch.equal(bundle.val.x[1], torch.full((2, 3), 11.0))
    assert bundle.test.y.tolist() == [k % 4 for k in range(14, 20)]
    assert bundle.num_classes == 4


def test_factory_runs_seeded_and_leaves_the_global_rng_alone(data_file: Path) -> None:
    torch.manual_seed(99)
    expected = torch.rand(2)
    torch.manual_seed(99)
    first = load_user_data(f"{data_file}:uses_global_rng", seed=5)
    assert torch.equal(torch.rand(2), expected)
    again = load_user_data(f"{data_file}:uses_global_rng", seed=5)
    other = load_user_data(f"{data_file}:uses_global_rng", seed=6)
    assert isinstance(first.train, TensorSplit) and isinstance(again.train, TensorSplit)
    assert isinstance(other.train, TensorSplit)
    torch.manual_seed(5)
    assert torch.equal(first.train.y, torch.randperm(10)[:8])
    assert torch.equal(first.train.y, again.train.y)
    assert not torch.equal(first.train.y, other.train.y)


def test_dict_result_and_float_targets(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:as_dict", seed=0)
    assert (len(bundle.train), len(bundle.val), bundle.num_classes) == (6, 2, 6)
    reg = load_user_data(f"{data_file}:regression", seed=0)
    assert isinstance(reg.train, TensorSplit)
    assert reg.num_classes == 0
    assert reg.train.x.dtype == torch.float32 and reg.train.y.dtype == torch.float32


def test_dataloaders_become_loader_splits(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:loaders", seed=0)
    assert isinstance(bundle.train, LoaderSplit)
    assert len(bundle.train) == 20 and len(bundle.val) == 5
    # The loader's own batch size wins over the one asked for.
    sizes = [len(y) for _, y in bundle.train.batches(64)]
    assert sizes == [6, 6, 6, 2]
    assert bundle.train.num_batches(64) == 4 and bundle.val.num_batches(64) == 3
    assert bundle.num_classes == 7  # from the dataset's `classes`
    assert bundle.input_shape == (2,)
    xs = torch.cat([x for x, _ in bundle.train.batches(1)])
    assert torch.equal(xs, torch.arange(40.0).reshape(20, 2))


def test_dataloader_without_class_attributes_is_scanned(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:scanned_loaders", seed=0)
    assert bundle.num_classes == 5


def test_loader_split_moves_batches_to_its_device(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:loaders", seed=0).to("meta")
    x, y = next(iter(bundle.train.batches(4)))
    assert x.device.type == "meta" and y.device.type == "meta"


def test_iterable_dataset_is_counted_and_batched(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:stream", seed=0)
    assert isinstance(bundle.train, LoaderSplit)
    assert len(bundle.train) == 11
    assert bundle.train.num_batches(4) == 3
    assert [len(y) for _, y in bundle.train.batches(4)] == [4, 4, 3]
    assert bundle.num_classes == 2 and bundle.input_shape == (1,)


def test_large_dataset_streams_in_the_same_order_as_tensors() -> None:
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 50

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return torch.tensor([float(i), -float(i)]), i % 10

    dataset = Items()
    small = load_user_data_from(dataset, max_tensor_bytes=10**9)
    large = load_user_data_from(dataset, max_tensor_bytes=100)
    assert isinstance(small.train, TensorSplit) and isinstance(large.train, LoaderSplit)
    assert large.num_classes == small.num_classes == 10
    for shuffled in (False, True):
        gen_a = torch.Generator().manual_seed(7) if shuffled else None
        gen_b = torch.Generator().manual_seed(7) if shuffled else None
        a = list(small.train.batches(16, gen_a))
        b = list(large.train.batches(16, gen_b))
        assert [len(y) for _, y in b] == [16, 16, 16, 2]
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def load_user_data_from(dataset: object, *, max_tensor_bytes: int) -> DataBundle:
    """load_user_data on a factory that returns `dataset` as both splits."""
    import sys
    import types

    module = types.ModuleType("userdata_inline_factory")
    module.make = lambda: (dataset, dataset)  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        return load_user_data(
            "userdata_inline_factory:make", seed=0, max_tensor_bytes=max_tensor_bytes
        )
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("needs_path", "needs_path() must take no required arguments (it needs path)"),
        ("ragged", "train[1] has input shape (4,) but train[0] has (3,)"),
        ("not_pairs", "train[0] is a tuple of 3 items: each item must be an (input, target)"),
        ("empty", "the train split is empty"),
        ("one_thing", "one_thing() returned a TensorDataset: return (train, val)"),
        ("raises", "raises() raised FileNotFoundError: no such file: data.csv (userdata_file.py:"),
        ("strings", "train[0] is a str: each item must be an (input, target) pair"),
        ("Squares", "is a type: name a function"),
        ("missing", "no 'missing' in"),
    ],
)
def test_data_errors(data_file: Path, name: str, expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        load_user_data(f"{data_file}:{name}", seed=0)
    assert expected in user_error(excinfo)


def test_data_spec_without_colon(tmp_path: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        load_user_data("my_data.py", seed=0)
    assert "built-in dataset (digits" in user_error(excinfo)


def test_sample_data_factories() -> None:
    bundle = load_user_data(f"{SAMPLES}/digits_data.py:make_data", seed=1)
    reference = load_dataset("digits", seed=1)
    assert isinstance(bundle.train, TensorSplit)
    total = len(bundle.train) + len(bundle.val) + (len(bundle.test) if bundle.test else 0)
    assert total == 1797
    assert (bundle.num_classes, bundle.input_shape) == (10, (1, 8, 8))
    assert float(bundle.train.x.max()) == 1.0
    assert reference.input_shape == bundle.input_shape
    loaders = load_user_data(f"{SAMPLES}/digits_data.py:make_loaders", seed=1)
    assert isinstance(loaders.train, LoaderSplit)
    assert len(loaders.train) == len(bundle.train)
    assert loaders.train.num_batches(1000) == -(-len(bundle.train) // 32)


# ------------------------------------------------------------------------------ loss


def test_builtin_losses_match_torch() -> None:
    out = torch.randn(4, 3)
    labels = torch.tensor([0, 2, 1, 2])
    fn, name = resolve_loss("CE")
    assert name == "cross-entropy"
    assert torch.allclose(fn(out, labels), nn.CrossEntropyLoss()(out, labels))
    fn, name = resolve_loss("mse")
    target = torch.randint(0, 2, (4, 3))
    assert torch.allclose(fn(out, target), ((out - target.float()) ** 2).mean())
    fn, name = resolve_loss("l1")
    assert torch.allclose(fn(out, target), (out - target.float()).abs().mean())
    expected = nn.BCEWithLogitsLoss()(out, target.float())
    assert resolve_loss("bce")[1] == "bce-with-logits"
    assert torch.allclose(bce_with_logits(out, target), expected)


def test_custom_losses(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "losses.py",
        """
        import torch
        from torch import nn

        def squared(output, target):
            return ((output - target) ** 2).sum()

        class Huber(nn.SmoothL1Loss):
            pass

        def one_arg(output):
            return output.sum()
        """,
    )
    fn, name = resolve_loss(f"{path}:squared")
    assert name == "losses:squared"
    assert float(fn(torch.ones(2), torch.zeros(2))) == 2.0
    fn, name = resolve_loss(f"{path}:Huber")
    assert isinstance(fn, nn.SmoothL1Loss) and name == "losses:Huber"
    with pytest.raises(UserError) as excinfo:
        resolve_loss(f"{path}:one_arg")
    assert "must take (output, target)" in user_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        resolve_loss("hinge")
    assert user_error(excinfo).startswith("unknown --loss 'hinge': use cross-entropy, mse")


# ------------------------------------------------------------------------ output key


def test_select_output() -> None:
    a, b = torch.zeros(2, 3), torch.ones(2, 4)
    assert select_output(a, None) is a
    assert select_output({"logits": a, "aux": b}, "aux") is b
    assert select_output((a, b), "1") is b
    assert select_output((a, b), "-2") is a
    pair = namedtuple("Pair", ["logits", "hidden"])(a, b)
    assert select_output(pair, "hidden") is b
    assert select_output({"out": (a, {"x": b})}, "out.1.x") is b
    assert select_output({"a.b": a}, "a.b") is a


@pytest.mark.parametrize(
    ("output", "key", "expected"),
    [
        ({"logits": 1, "aux": 2}, None, "returns a dict (logits int, aux int): choose"),
        ((torch.zeros(2, 3), torch.zeros(2)), None, "tuple of 2 items ((2, 3), (2,))"),
        ({"logits": torch.zeros(1)}, "score", "has no key 'score'; its keys are logits"),
        ((torch.zeros(1),), "3", "use an index 0..0"),
        (torch.zeros(1), "logits", "the model returns a single tensor"),
        ({"n": 3}, "n", "selects a int, not a tensor"),
    ],
)
def test_select_output_errors(output: object, key: str | None, expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        select_output(output, key)
    assert expected in user_error(excinfo)


def test_a_missing_output_key_suggests_the_item_with_one_output_per_class() -> None:
    # The features come first and the logits second: the hint must name the logits.
    feats, logits = torch.zeros(4, 32), torch.zeros(4, 10)
    for output, key in (({"feat": feats, "logits": logits}, "logits"), ((feats, logits), "1")):
        with pytest.raises(UserError) as excinfo:
            select_output(output, None, num_classes=10)
        assert f"e.g. --output-key {key})" in user_error(excinfo)
        assert "(4, 32)" in user_error(excinfo) and "(4, 10)" in user_error(excinfo)


# ----------------------------------------------------------------------- shape check


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_dataset("digits", seed=0)


def small_bundle(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> DataBundle:
    split = TensorSplit(x, y)
    return DataBundle("t", split, split, None, num_classes, tuple(x.shape[1:]))


def check(model: nn.Module, bundle: DataBundle, loss: str = "cross-entropy") -> str:
    with pytest.raises(UserError) as excinfo:
        check_shapes(model, bundle, loss, None)
    return user_error(excinfo)


def test_sample_models_pass_the_check(digits: DataBundle) -> None:
    for spec, key in (
        ("deep_sigmoid_cnn.py:DeepSigmoidCNN", None),
        ("residual_net.py:ResidualNet", None),
        ("dict_output.py:DictOutput", "logits"),
    ):
        model = load_model_factory(f"{SAMPLES}/{spec}")[0]()
        assert check_shapes(model, digits, "cross-entropy", key) == []


def test_wrong_number_of_classes(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    assert check(model, digits) == (
        "the model outputs 5 classes but the data has 10 (targets 0..9): "
        "change the model's last layer to 10 outputs"
    )


def test_more_classes_than_the_data_is_a_warning(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 12))
    warnings = check_shapes(model, digits, "cross-entropy")
    assert len(warnings) == 1 and "outputs 12 classes but the data has 10" in warnings[0]


def test_wrong_input_channels(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    assert check(model, digits).startswith(
        "the model expects 3 input channels but the data has 1 (input shape (1, 8, 8))"
    )


@pytest.mark.parametrize("size", [8, 28])
def test_images_without_a_channel_axis(size: int) -> None:
    # A batch of (N, H, W) reads to Conv2d as one unbatched image of N channels: the
    # message must say the samples lack a channel axis, not count the batch as channels.
    bundle = small_bundle(torch.rand(40, size, size), torch.randint(0, 10, (40,)), 10)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
    message = check(model, bundle)
    assert message.startswith("layer '0' (Conv2d) takes inputs shaped (batch, channels, "
                              "height, width) but the data's samples have shape "
                              f"({size}, {size}), with no channel axis")
    assert f"x.unsqueeze(1) makes them (1, {size}, {size})" in message
    assert "in_channels" not in message


def test_channels_inside_the_model(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(64, 10))
    assert check(model, digits).startswith("layer '1' (Conv2d) expects 8 input channels but gets 4")


def test_unflattened_input_to_linear(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Linear(64, 10))
    message = check(model, digits)
    assert "layer '0' (Linear) expects 64 input features" in message
    assert "flatten them first" in message


def test_wrong_in_features(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    assert check(model, digits) == (
        "layer '1' (Linear) expects 784 input features but gets 64 "
        "(the data's input shape is (1, 8, 8)): change its in_features to 64"
    )


def test_rnn_input_size(digits: DataBundle) -> None:
    class Rows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.RNN(28, 8, batch_first=True)
            self.head = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x.flatten(1, -2))[0][:, -1])

    assert check(Rows(), digits) == (
        "layer 'rnn' (RNN) expects 28 input features per step but gets 8: "
        "change its input_size to 8"
    )


def test_byte_images(digits: DataBundle) -> None:
    x = (torch.rand(4, 1, 8, 8) * 255).to(torch.uint8)
    bundle = small_bundle(x, torch.tensor([0, 1, 2, 3]), 4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 4))
    message = check(model, bundle)
    assert message.startswith(
        "the model's weights are torch.float32 but the inputs are torch.uint8"
    )


def test_embedding_errors() -> None:
    tokens = torch.tensor([[1, 5, 9], [2, 3, 4]])
    bundle = small_bundle(tokens, torch.tensor([0, 1]), 2)
    model = nn.Sequential(nn.Embedding(6, 4), nn.Flatten(), nn.Linear(12, 2))
    assert check(model, bundle) == (
        "layer '0' (Embedding) has 6 rows but the inputs hold ids up to 9: "
        "raise its num_embeddings to 10"
    )
    floats = small_bundle(tokens.float(), torch.tensor([0, 1]), 2)
    assert "needs integer token ids" in check(model, floats)


def test_batchnorm_features(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(32), nn.Linear(64, 10))
    assert check(model, digits).startswith(
        "layer '1' (BatchNorm1d) expects 32 features but gets 64"
    )


def test_view_that_does_not_fit(digits: DataBundle) -> None:
    class Hardcoded(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(320, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).view(-1, 320))

    assert "a view/reshape in the model's forward after 'conv' cannot make shape" in check(
        Hardcoded(), digits
    )


def test_batch_dimension_folded(digits: DataBundle) -> None:
    class Folds(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(-1, 32))

    assert check(Folds(), digits).startswith("the model outputs 4 rows for a batch of 2 samples")


def test_other_failures_are_reported_in_one_line(digits: DataBundle) -> None:
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise KeyError("oops\nsecond line")

    message = check(Fails(), digits)
    assert message.startswith("the model failed on 2 training samples of shape (1, 8, 8): KeyError")
    # where in the user's code, as a failure during training says it
    raising_line = Fails.forward.__code__.co_firstlineno + 1
    assert message.endswith(f"(test_userdata.py:{raising_line})"), message
    assert "\n" not in message


def test_elementwise_losses(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    assert "use --loss cross-entropy" in check(model, digits, "mse")
    x = torch.rand(4, 3)
    bundle = small_bundle(x, x.sum(1), 0)
    column = nn.Linear(3, 1)
    assert check(column, bundle, "mse").startswith(
        "the model outputs shape (2, 1) but the targets have shape (2,)"
    )
    regression = small_bundle(x, x.sum(1, keepdim=True), 0)
    assert check_shapes(column, regression, "mse") == []
    assert "use --loss mse for regression" in check(column, bundle, "cross-entropy")


def test_output_key_needed_and_detached_output(digits: DataBundle) -> None:
    dict_model = load_model_factory(f"{SAMPLES}/dict_output.py:DictOutput")[0]()
    assert "--output-key" in check(dict_model, digits)

    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)).detach()

    assert "does not depend on the model's parameters" in check(Detached(), digits)


def test_custom_loss_failures(digits: DataBundle) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def per_sample(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output, target, reduction="none")

    with pytest.raises(UserError) as excinfo:
        check_shapes(model, digits, "mine:per_sample", loss_fn=per_sample)
    assert "returned a tensor of shape (2,): it must return one tensor" in user_error(excinfo)

    def broken(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return output @ target

    with pytest.raises(UserError) as excinfo:
        check_shapes(model, digits, "mine:broken", loss_fn=broken)
    assert user_error(excinfo).startswith("the loss mine:broken failed on outputs (2, 10)")


def test_check_leaves_model_and_rng_untouched(digits: DataBundle) -> None:
    model = load_model_factory(f"{SAMPLES}/residual_net.py:ResidualNet")[0]()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(4)
    expected = torch.rand(2)
    torch.manual_seed(4)
    assert check_shapes(model, digits, "cross-entropy") == []
    assert torch.equal(torch.rand(2), expected)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and not model.stem[0]._forward_pre_hooks


def test_check_on_a_loader_split(data_file: Path) -> None:
    bundle = load_user_data(f"{data_file}:loaders", seed=0)
    model = nn.Linear(2, 7)
    assert check_shapes(model, bundle, "cross-entropy") == []
    narrow = nn.Linear(2, 3)
    assert check(narrow, bundle).startswith("the model outputs 3 classes but the data has 7")


def test_loader_split_wraps_a_plain_dataloader() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    split = LoaderSplit(DataLoader(TensorDataset(x, y), batch_size=4, shuffle=False))
    assert len(split) == 10 and split.num_batches(3) == 3
    assert [b.tolist() for _, b in split.batches(3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
