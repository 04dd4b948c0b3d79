"""Loading the user's model: every spec form, --model-arg, --weights and each user error."""

from __future__ import annotations

import enum
import math
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
import torch
from torch import nn

from vgdiag.errors import UserError
from vgdiag.inputs.datasets import load_dataset
from vgdiag.inputs.loading import load_model_factory
from vgdiag.inputs.modelargs import convert_value, parse_model_args

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_models"


def write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def user_error(excinfo: pytest.ExceptionInfo[UserError]) -> str:
    """The message, checked to be the one line a user sees."""
    message = str(excinfo.value)
    assert "\n" not in message and message.strip() == message
    return message


NET = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width: int = 4, scale: float = 1.0):
            super().__init__()
            self.fc = nn.Linear(3, width)
            self.scale = scale

        def forward(self, x):
            return self.fc(x) * self.scale

    def make_net(width: int = 4):
        return Net(width)

    prebuilt = Net(5)
    NOT_A_MODEL = 3

    class Helper:
        pass

    def returns_int():
        return 7
"""


@pytest.fixture
def net_file(tmp_path: Path) -> Path:
    return write(tmp_path, "net.py", NET)


# ------------------------------------------------------------------------ spec forms


def test_file_class_spec_builds_fresh_independent_models(net_file: Path) -> None:
    factory, name = load_model_factory(f"{net_file}:Net", model_args=["width=6"])
    assert name == "Net"
    torch.manual_seed(0)
    a = factory()
    torch.manual_seed(0)
    b = factory()
    assert a is not b and a.fc.weight.shape == (6, 3)
    assert torch.equal(a.fc.weight, b.fc.weight)  # same seed, same init
    with torch.no_grad():
        a.fc.weight.add_(1.0)
    assert not torch.equal(a.fc.weight, b.fc.weight)  # nothing shared


def test_file_factory_function_spec(net_file: Path) -> None:
    factory, name = load_model_factory(f"{net_file}:make_net", model_args=["width=2"])
    assert name == "make_net"
    assert factory().fc.out_features == 2


def test_module_level_instance_is_copied_per_build(net_file: Path) -> None:
    factory, name = load_model_factory(f"{net_file}:prebuilt")
    a, b = factory(), factory()
    assert name == "prebuilt" and a.fc.out_features == 5
    assert a.fc.weight.data_ptr() != b.fc.weight.data_ptr()
    assert torch.equal(a.fc.weight, b.fc.weight)


def test_sibling_import_works_and_sys_path_is_restored(tmp_path: Path) -> None:
    write(tmp_path, "blocks_for_sibling_test.py", "from torch import nn\nWIDTH = 7\n")
    path = write(
        tmp_path,
        "model.py",
        """
        from torch import nn
        from blocks_for_sibling_test import WIDTH

        def build():
            return nn.Linear(2, WIDTH)
        """,
    )
    before = list(sys.path)
    factory, _ = load_model_factory(f"{path}:build")
    assert factory().out_features == 7
    assert sys.path == before


def test_two_files_with_the_same_name_do_not_collide(tmp_path: Path) -> None:
    one = write(tmp_path / "a", "model.py", "from torch import nn\nNet = lambda: nn.Linear(1, 1)\n")
    two = write(tmp_path / "b", "model.py", "from torch import nn\nNet = lambda: nn.Linear(1, 2)\n")
    assert load_model_factory(f"{one}:Net")[0]().out_features == 1
    assert load_model_factory(f"{two}:Net")[0]().out_features == 2


def test_package_module_spec_from_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "userpkg_for_test/__init__.py", "")
    write(
        tmp_path,
        "userpkg_for_test/models.py",
        "from torch import nn\n\ndef tiny(out: int = 3):\n    return nn.Linear(2, out)\n",
    )
    monkeypatch.chdir(tmp_path)
    factory, name = load_model_factory("userpkg_for_test.models:tiny", model_args=["out=4"])
    assert name == "tiny" and factory().out_features == 4


def test_installed_module_spec_with_converted_args() -> None:
    factory, name = load_model_factory(
        "torch.nn:Linear", model_args=["in_features=4", "out_features=2", "bias=false"]
    )
    model = factory()
    assert name == "Linear" and model.weight.shape == (2, 4) and model.bias is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_file_gives_independent_copies(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    path = tmp_path / "scripted.pt"
    torch.jit.script(original).save(str(path))
    factory, name = load_model_factory(str(path))
    a, b = factory(), factory()
    x = torch.randn(5, 3)
    assert name == "scripted"
    assert torch.allclose(a(x), original(x))
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert torch.allclose(b(x), original(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_torchscript_model_trains_with_its_parameters_measured(tmp_path: Path) -> None:
    # TorchScript modules take no forward hooks, and a deep copy of one has parameters
    # that are not leaves: each build loads its own copy, the probe reads the parameters.
    from vgdiag.engine.events import RunFinished, StepSampled
    from vgdiag.engine.trainer import run_training
    from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data

    torch.manual_seed(0)
    path = tmp_path / "scripted.pt"
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16),
                                   nn.ReLU(), nn.Linear(16, 10))).save(str(path))
    options = RunOptions(model=str(path), epochs=1)
    data = load_data(options)
    experiment = build_experiment(options, data)
    assert all(p.is_leaf for p in experiment.build_model().parameters())
    events = list(run_training(experiment, data))
    assert isinstance(events[-1], RunFinished), events[-1]
    layers = {i.name: i for i in events[-1].layers}
    assert [(n, i.kind, i.role) for n, i in layers.items()] == [
        ("1", "Linear", ""), ("2", "BatchNorm1d", "norm"), ("4", "Linear", "")]
    records = [e.record for e in events if isinstance(e, StepSampled)]
    assert records and events[-1].steps_done > 0
    for stats in records[-1].layers.values():
        assert stats.grad_norm > 0 and stats.weight_change > 0  # measured, and learning
        assert math.isnan(stats.act_mean)  # no forward hooks: no activation statistics


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_with_ts_suffix(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    assert load_model_factory(str(path))[0]()(torch.ones(1, 2)).shape == (1, 2)


def test_pickled_model_is_refused_without_trust_and_loaded_with_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(3, 2), nn.Sigmoid())
    path = tmp_path / "whole.pt"
    torch.save(original, path)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(str(path))
    message = user_error(excinfo)
    assert "pickled model" in message and "--trust-pickle" in message
    assert "arbitrary code" in message
    factory, _ = load_model_factory(str(path), trust_pickle=True)
    x = torch.randn(4, 3)
    a, b = factory(), factory()
    assert torch.equal(a(x), original(x))
    assert a[0].weight.data_ptr() != b[0].weight.data_ptr()


def test_pickled_model_from_a_script_main_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "from_main.pt"
    script = write(
        tmp_path,
        "save_it.py",
        f"""
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(2, 2)

        torch.save(Net(), {str(path)!r})
        """,
    )
    import subprocess

    subprocess.run([sys.executable, str(script)], check=True)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(str(path), trust_pickle=True)
    assert "script that saved it" in user_error(excinfo)


def test_state_dict_given_as_model_points_to_weights(tmp_path: Path) -> None:
    path = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(str(path))
    assert "--weights" in user_error(excinfo)


# ---------------------------------------------------------------------------- weights


def test_weights_are_loaded_on_every_build(net_file: Path, tmp_path: Path) -> None:
    source = nn.Linear(3, 4)
    inner = {f"fc.{k}": v for k, v in source.state_dict().items()}
    layouts = {
        "plain.pt": inner,
        "ckpt.pt": {"state_dict": inner, "epoch": 3},
        "model_key.pt": {"model": inner},
        "ddp.pt": {f"module.{k}": v for k, v in inner.items()},
    }
    for name, state in layouts.items():
        torch.save(state, tmp_path / name)
        factory, _ = load_model_factory(f"{net_file}:Net", weights=tmp_path / name)
        for _ in range(2):
            model = factory()
            assert torch.equal(model.fc.weight, source.weight), name
            assert torch.equal(model.fc.bias, source.bias), name


def test_weights_that_do_not_fit_are_listed(net_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "wide.pt"
    torch.save({"fc.weight": torch.zeros(8, 3), "extra.bias": torch.zeros(2)}, path)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Net", weights=path)
    message = user_error(excinfo)
    assert "missing fc.bias" in message
    assert "unexpected extra.bias" in message
    assert "fc.weight is (8, 3) in the file but (4, 3) in the model" in message


def test_weights_errors(net_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Net", weights=tmp_path / "absent.pt")
    assert "file not found" in user_error(excinfo)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "nostate.pt")
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Net", weights=tmp_path / "nostate.pt")
    assert "found no state dict" in user_error(excinfo)
    torch.save(nn.Linear(3, 4), tmp_path / "pickled.pt")
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Net", weights=tmp_path / "pickled.pt")
    assert "state_dict()" in user_error(excinfo)


# ------------------------------------------------------------------------ user errors


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("missing_file.py:Net", "file not found: missing_file.py"),
        ("justaname", "is not a model spec"),
        ("{net}", "add :Name"),
        ("{net}:Nett", "no 'Nett' in"),
        ("{net}:NOT_A_MODEL", "is a int, not an nn.Module class"),
        ("{net}:Helper", "not a torch.nn.Module subclass"),
        ("{net}:returns_int", "returns_int() returned an int, not a torch.nn.Module"),
        ("no_such_module_xyz.models:Net", "no module named 'no_such_module_xyz'"),
        ("{net}:bad-name", "is not a Python name"),
    ],
)
def test_spec_errors(net_file: Path, spec: str, expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        load_model_factory(spec.format(net=net_file))
    assert expected in user_error(excinfo)


def test_name_not_found_lists_candidates(net_file: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Nett")
    message = user_error(excinfo)
    assert "did you mean Net?" in message
    assert "it defines Net, make_net, prebuilt, returns_int" in message


def test_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.py", "import torch\n\ndef f(:\n    pass\n")
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:f")
    message = user_error(excinfo)
    assert message.startswith(f"syntax error in {path}:3: ")


def test_missing_import_names_the_module(tmp_path: Path) -> None:
    path = write(tmp_path, "needs.py", "import torch\nimport not_installed_pkg_abc\n")
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:Net")
    message = user_error(excinfo)
    assert "'not_installed_pkg_abc'" in message and "(needs.py:2)" in message


def test_script_code_at_import_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "script.py", "import sys\nsys.exit(2)\n")
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:Net")
    assert "exited while being imported" in user_error(excinfo)


def test_constructor_error_is_one_line_with_location(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "raises.py",
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, width: int = 4):
                super().__init__()
                raise ValueError("width must be even\\nreally")
        """,
    )
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:Net")
    assert user_error(excinfo) == (
        "building Net raised ValueError: width must be even really (raises.py:7)"
    )


def test_models_without_trainable_parameters(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "empty.py",
        """
        from torch import nn

        def empty():
            return nn.Sequential(nn.ReLU())

        def frozen():
            return nn.Linear(2, 2).requires_grad_(False)
        """,
    )
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:empty")
    assert "model has no parameters: nothing to diagnose" in user_error(excinfo)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{path}:frozen")
    assert "is frozen" in user_error(excinfo)


def test_validation_build_leaves_the_global_rng_alone(net_file: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model_factory(f"{net_file}:Net")
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------- --model-arg


class Colour(enum.Enum):
    RED = "r"
    BLUE = "b"


def configurable(
    depth: int,
    scale: float = 1.0,
    use_bias: bool = True,
    name: str = "x",
    size: tuple[int, ...] = (3,),
    pair: tuple[int, float] = (1, 1.0),
    dims: list[int] | None = None,
    limit: int | None = 5,
    mode: Literal["fast", "slow"] = "fast",
    colour: Colour = Colour.RED,
    legacy=0.5,  # noqa: ANN001 - unannotated on purpose: typed from the default
    count=2,  # noqa: ANN001
) -> nn.Module:
    return nn.Linear(1, 1)


def test_model_args_are_converted_by_annotation() -> None:
    args, kwargs = parse_model_args(
        configurable,
        [
            "depth=1e3",
            "scale=0.25",
            "use-bias=no",
            "name= hello",
            "size=(4, 5, 6)",
            "pair=2,0.5",
            "dims=[1,2]",
            "limit=none",
            "mode=slow",
            "colour=blue",
            "legacy=3",
            "count=0.5",
        ],
        display="configurable",
    )
    assert args == []
    assert kwargs == {
        "depth": 1000,
        "scale": 0.25,
        "use_bias": False,
        "name": "hello",
        "size": (4, 5, 6),
        "pair": (2, 0.5),
        "dims": [1, 2],
        "limit": None,
        "mode": "slow",
        "colour": Colour.BLUE,
        "legacy": 3.0,
        "count": 0.5,
    }
    assert type(kwargs["legacy"]) is float


@pytest.mark.parametrize(
    ("text", "annotation", "value"),
    [
        ("TRUE", bool, True),
        ("0", bool, False),
        ("on", bool, True),
        ("-7", int, -7),
        ("1_000", int, 1000),
        ("inf", float, float("inf")),
        ("3", int | None, 3),
        ("null", int | None, None),
        ("3,", tuple[int, ...], (3,)),
        ("[]", list[int], []),
        ("2.5", int | float, 2.5),
    ],
)
def test_convert_value(text: str, annotation: object, value: object) -> None:
    assert convert_value(text, annotation) == value


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        (["depth=abc"], "--model-arg depth='abc': expected an integer"),
        (["depth=1", "use_bias=maybe"], "--model-arg use_bias='maybe': expected true or false"),
        (["depth=1", "mode=medium"], "expected one of fast, slow"),
        (["depth=1", "pair=1,2,3"], "expected 2 comma-separated values"),
        (["depth=1", "colour=green"], "expected one of RED, BLUE"),
        (["depht=1"], "unknown --model-arg depht for configurable: valid keys are colour, count"),
        ([], "configurable needs a value for depth: pass --model-arg depth=VALUE"),
        (["depth"], "--model-arg 'depth' is not key=value"),
        (["depth=1", "depth=2"], "--model-arg depth is given twice"),
    ],
)
def test_model_arg_errors(pairs: list[str], expected: str) -> None:
    with pytest.raises(UserError) as excinfo:
        parse_model_args(configurable, pairs, display="configurable")
    assert expected in user_error(excinfo)


def test_model_arg_with_a_non_value_type_is_refused() -> None:
    def takes_module(block: nn.Module | None = None) -> nn.Module:
        return nn.Linear(1, 1)

    with pytest.raises(UserError) as excinfo:
        parse_model_args(takes_module, ["block=x"], display="takes_module")
    assert "cannot be given on the command line" in user_error(excinfo)


def test_model_args_go_through_kwargs_and_positional_only() -> None:
    def flexible(a: int, /, b: int = 1, **extra: object) -> nn.Module:
        return nn.Linear(1, 1)

    args, kwargs = parse_model_args(flexible, ["a=2", "other=0.5"], display="flexible")
    assert args == [2] and kwargs == {"other": 0.5}


def test_string_annotations_from_future_import(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "future.py",
        """
        from __future__ import annotations
        from torch import nn

        def make(width: int | None = None, act: str = "tanh", flag: bool = False):
            m = nn.Linear(2, width or 3)
            m.flag = flag
            return m
        """,
    )
    factory, _ = load_model_factory(f"{path}:make", model_args=["width=5", "flag=yes"])
    model = factory()
    assert model.out_features == 5 and model.flag is True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_model_args_for_a_saved_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.pt"
    torch.jit.script(nn.Linear(2, 2)).save(str(path))
    with pytest.raises(UserError) as excinfo:
        load_model_factory(str(path), model_args=["width=3"])
    assert "is a saved model" in user_error(excinfo)


def test_unknown_model_arg_on_the_real_spec(net_file: Path) -> None:
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{net_file}:Net", model_args=["depth=3"])
    assert user_error(excinfo) == "unknown --model-arg depth for Net: valid keys are scale, width"


# ------------------------------------------------------------------- sample models

SAMPLE_SPECS = [
    ("deep_sigmoid_cnn.py", "DeepSigmoidCNN", None),
    ("tanh_rnn.py", "RowRNN", None),
    ("residual_net.py", "ResidualNet", None),
    ("shared_weights.py", "SharedWeights", None),
    ("factory.py", "make_mlp", None),
    ("tiny_transformer.py", "TinyTransformer", None),
    ("row_lstm.py", "RowLSTM", None),
    ("frozen_backbone.py", "FrozenBackbone", None),
    ("dict_output.py", "DictOutput", "logits"),
]


@pytest.fixture(scope="module")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    bundle = load_dataset("digits", seed=0)
    assert bundle.train.__class__.__name__ == "TensorSplit"
    return bundle.train.x[:32], bundle.train.y[:32]  # type: ignore[attr-defined]


def _forward_backward(
    spec: str, key: str | None, batch: tuple[torch.Tensor, torch.Tensor]
) -> nn.Module:
    factory, _ = load_model_factory(spec)
    torch.manual_seed(0)
    model = factory()
    out = model(batch[0])
    logits = out[key] if key else out
    assert logits.shape == (32, 10)
    nn.functional.cross_entropy(logits, batch[1]).backward()
    return model


@pytest.mark.parametrize(("file", "name", "key"), SAMPLE_SPECS)
def test_sample_model_builds_and_has_finite_gradients(
    file: str, name: str, key: str | None, digits_batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = _forward_backward(f"{SAMPLES / file}:{name}", key, digits_batch)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
        else:
            assert p.grad is None, pname


def test_sample_files_import_only_torch() -> None:
    for path in SAMPLES.glob("*.py"):
        if path.name == "digits_data.py":
            continue
        imports = [
            line.split()[1]
            for line in path.read_text().splitlines()
            if line.startswith(("import ", "from "))
        ]
        assert {i.split(".")[0] for i in imports} <= {"__future__", "torch"}, path.name


def _grad_ratio(model: nn.Module, first: nn.Module, last: nn.Module) -> float:
    assert first.weight.grad is not None and last.weight.grad is not None
    return float(first.weight.grad.norm() / last.weight.grad.norm())


def test_deep_sigmoid_cnn_shows_vanishing_and_residual_net_does_not(
    digits_batch: tuple[torch.Tensor, torch.Tensor],
) -> None:
    sick = _forward_backward(f"{SAMPLES}/deep_sigmoid_cnn.py:DeepSigmoidCNN", None, digits_batch)
    healthy = _forward_backward(f"{SAMPLES}/residual_net.py:ResidualNet", None, digits_batch)
    # Each sigmoid conv divides the gradient by ~10: six of them leave ~1e-6.
    assert _grad_ratio(sick, sick.features[0], sick.head) < 1e-4
    assert _grad_ratio(healthy, healthy.stem[0], healthy.head) > 1e-2


def test_factory_sample_takes_model_args(digits_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    factory, _ = load_model_factory(
        f"{SAMPLES}/factory.py:make_mlp",
        model_args=["depth=3", "width=16", "activation=relu"],
    )
    model = factory()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert len(linears) == 4 and linears[0].out_features == 16
    assert any(isinstance(m, nn.ReLU) for m in model)
    with pytest.raises(UserError) as excinfo:
        load_model_factory(f"{SAMPLES}/factory.py:make_mlp", model_args=["activation=swish"])
    assert "activation must be one of" in user_error(excinfo)


def test_weights_load_onto_the_built_in_mlp_too(tmp_path: Path) -> None:
    from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data

    options = RunOptions(depth=3, width=16, seed=1)
    data = load_data(options)
    trained = build_experiment(options, data).build_model()
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(2.0).add_(0.25)  # nothing a fresh init would give
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    other = RunOptions(depth=3, width=16, seed=7, weights=path)
    experiment = build_experiment(other, data)
    assert experiment.model_spec.endswith(f"weights={path}")  # config.json says so
    loaded = experiment.build_model()
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(UserError, match="nofile"):
        build_experiment(RunOptions(depth=3, width=16, weights=tmp_path / "nofile.pt"), data)
    with pytest.raises(UserError):  # a state dict of another shape
        build_experiment(RunOptions(depth=4, width=16, weights=path), data)
