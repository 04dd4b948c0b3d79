"""The seven built-in mitigations on the reference MLP and on models unlike it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from vgdiag.engine.experiment import Experiment, Stage, TrainConfig, sgd
from vgdiag.engine.models import build_mlp
from vgdiag.errors import UserError
from vgdiag.plugin_api import Plugin
from vgdiag.surgery import trace
from vgdiag_plugins.adam import Adam
from vgdiag_plugins.batchnorm import BatchNorm
from vgdiag_plugins.gradnorm import GradNorm, GradNormalize, GradNormLayer
from vgdiag_plugins.layerwise import Frozen, Layerwise, default_blocks, split_epochs
from vgdiag_plugins.relu import Relu
from vgdiag_plugins.skip import Residual, Skip
from vgdiag_plugins.weight_init import WeightInit

SHAPE = (1, 8, 8)
PLUGINS: dict[str, Plugin] = {
    p.name: p for p in (WeightInit(), Relu(), Adam(), BatchNorm(), Skip(), Layerwise(), GradNorm())
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Models this small gain nothing from intra-op threads, and on a busy machine the
    # threads' spinning costs seconds per test.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- models ----------------------------------------------------------------------------


def sigmoid_mlp() -> nn.Sequential:
    return build_mlp(64, 10, depth=7)


def relu_mlp() -> nn.Sequential:
    return build_mlp(64, 10, depth=3, width=32, activation="relu")


def sigmoid_cnn() -> nn.Sequential:
    """Conv blocks keep (4, 8, 8) from the second on; Flatten ends the last hidden block."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


class Tower(nn.Module):
    """Custom forward: the input layer runs first though registered last, a functional
    tanh nobody can swap, and a ModuleList of Linear/Tanh pairs."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(3))
        self.acts = nn.ModuleList(nn.Tanh() for _ in range(3))
        self.out = nn.Linear(16, 10)
        self.inp = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inp(x.flatten(1)))
        for layer, act in zip(self.layers, self.acts, strict=True):
            h = act(layer(h))
        return self.out(h)


def sigmoid_output() -> nn.Sequential:
    """A logistic model: its only sigmoid shapes the output."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid())


MODELS = {
    "mlp": sigmoid_mlp,
    "relu-mlp": relu_mlp,
    "cnn": sigmoid_cnn,
    "tower": Tower,
    "sigmoid-output": sigmoid_output,
}


def make_experiment(model: str = "mlp", **changes: object) -> Experiment:
    factory = MODELS[model]
    base = Experiment(
        name=model,
        model_factory=factory,
        optimizer_factory=sgd(0.01),  # the reference's SGD
        loss_fn=nn.functional.cross_entropy,
        train=TrainConfig(epochs=14, batch_size=16),
        model_spec=f"test:{model}",
        input_shape=SHAPE,
        num_classes=10,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def built(experiment: Experiment) -> nn.Module:
    torch.manual_seed(0)
    return experiment.build_model()


def batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, *SHAPE), generator=g), torch.randint(0, 10, (n,), generator=g)


# -- applicability ----------------------------------------------------------------------

APPLIES = {
    # model -> {plugin: None (applies) or a piece of the reason}
    "mlp": dict.fromkeys(PLUGINS),
    "cnn": dict.fromkeys(PLUGINS),
    "tower": {
        **dict.fromkeys(PLUGINS),
        "skip": "no nn.Sequential",
        "layerwise": "needs an nn.Sequential stack",
    },
    "relu-mlp": {**dict.fromkeys(PLUGINS), "relu": "the model has no saturating activation"},
    "sigmoid-output": {
        **dict.fromkeys(PLUGINS),
        "relu": "follow the output layer",
        "batchnorm": "no hidden Linear/Conv",
        "skip": "no run of layers keeps its input shape",
        "layerwise": "at least 2",
        "gradnorm": "no activation modules before the output layer",
    },
}


@pytest.mark.parametrize(
    ("model", "plugin"), [(m, p) for m in APPLIES for p in PLUGINS], ids=lambda v: str(v)
)
def test_why_not_says_whether_each_plugin_applies(model: str, plugin: str) -> None:
    expected = APPLIES[model][plugin]
    reason = PLUGINS[plugin].why_not(make_experiment(model), {})
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and expected in reason, reason
        with pytest.raises(UserError, match="does not apply"):
            PLUGINS[plugin].apply(make_experiment(model), {})


def test_adam_does_not_apply_twice() -> None:
    once = Adam().apply(make_experiment(), {})
    assert Adam().why_not(once, {}) == "already uses Adam"


def test_plugins_that_need_shapes_say_so_without_an_input_shape() -> None:
    experiment = make_experiment(input_shape=None)
    for name in ("batchnorm", "skip", "layerwise"):
        reason = PLUGINS[name].why_not(experiment, {})
        assert reason is not None and "input shape" in reason


def test_a_wrong_input_shape_is_reported_not_raised() -> None:
    reason = BatchNorm().why_not(make_experiment(input_shape=(3, 5)), {})
    assert reason is not None and "dry forward on zeros of shape (2, 3, 5) failed" in reason


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_unknown_option_lists_the_valid_ones(plugin: str) -> None:
    with pytest.raises(UserError, match="has no option 'bogus'; valid options: ") as err:
        PLUGINS[plugin].apply(make_experiment(), {"bogus": "1"})
    for option in PLUGINS[plugin].options:
        assert option in str(err.value)


@pytest.mark.parametrize(
    ("plugin", "options"),
    [
        ("weight-init", {"std": "-1"}),
        ("weight-init", {"std": "abc"}),
        ("weight-init", {"scheme": "orthogonal"}),
        ("weight-init", {"scheme": "xavier", "std": "1.0"}),
        ("relu", {"to": "sigmoid"}),
        ("adam", {"lr": "0"}),
        ("skip", {"span": "0"}),
        ("skip", {"blocks": "3-2"}),
        ("skip", {"blocks": "1-2"}),  # layer 1 changes 64 -> 128 features
        ("skip", {"span": "2", "blocks": "2-3"}),
        ("layerwise", {"blocks": "2,2"}),
        ("layerwise", {"epochs": "1,2"}),
        ("layerwise", {"batch-size": "0"}),
        ("gradnorm", {"eps": "nan"}),
        ("gradnorm", {"scale": "layer"}),
    ],
)
def test_bad_option_values_are_user_errors(plugin: str, options: dict[str, str]) -> None:
    with pytest.raises(UserError):
        PLUGINS[plugin].apply(make_experiment(), options)


# -- apply() leaves its input alone ------------------------------------------------------


@pytest.mark.parametrize("plugin", list(PLUGINS))
def test_apply_returns_a_new_experiment_and_leaves_the_input_and_rng_alone(plugin: str) -> None:
    original = make_experiment()
    snapshot = (
        list(original.model_transforms),
        list(original.plugins),
        dict(original.notes),
        original.optimizer_factory,
        original.optimizer_name,
        original.stage_plan,
        dataclasses.replace(original.train),
    )
    structure = repr(built(original))
    rng = torch.get_rng_state()
    variant = PLUGINS[plugin].apply(original, {})
    assert torch.equal(torch.get_rng_state(), rng)  # inspecting must not shift the seed stream
    assert variant is not original
    assert variant.plugins == [plugin]
    assert plugin in variant.notes
    assert (
        list(original.model_transforms),
        list(original.plugins),
        dict(original.notes),
        original.optimizer_factory,
        original.optimizer_name,
        original.stage_plan,
        original.train,
    ) == snapshot
    assert repr(built(original)) == structure


def test_plugins_chain_and_record_their_order() -> None:
    experiment = make_experiment()
    for name in ("weight-init", "relu", "batchnorm", "skip", "gradnorm", "layerwise", "adam"):
        experiment = PLUGINS[name].apply(experiment, {})
    assert experiment.plugins == [
        "weight-init",
        "relu",
        "batchnorm",
        "skip",
        "gradnorm",
        "layerwise",
        "adam",
    ]
    model = built(experiment)
    assert experiment.stage_plan is not None
    stages = experiment.stage_plan(model)
    # After skip the stack is L1, three Residual blocks, output: 4 hidden blocks.
    assert experiment.notes["layerwise"]["blocks"] == [2, 2]
    assert len(stages) == 3 and stages[-1].model is model
    x, y = batch()
    assert torch.isfinite(nn.functional.cross_entropy(model(x), y))


# -- every transformed model trains ------------------------------------------------------


def train_a_little(experiment: Experiment, steps: int = 15) -> tuple[float, float]:
    """Loss of the final model on one batch before and after a few steps of every stage."""
    torch.manual_seed(0)
    model = experiment.build_model()
    stages = experiment.stage_plan(model) if experiment.stage_plan else [Stage("all", 1, model)]
    assert stages[-1].model is model
    x, y = batch()
    with torch.no_grad():
        before = float(experiment.loss_fn(model(x), y))
    for stage in stages:
        stage.model.train()
        params = stage.trainable or list(stage.model.parameters())
        optimizer = experiment.optimizer_factory(params)
        for _ in range(steps):
            optimizer.zero_grad()
            loss = experiment.loss_fn(stage.model(x), y)
            loss.backward()
            for p in params:
                assert p.grad is not None and torch.isfinite(p.grad).all()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        after = float(experiment.loss_fn(model(x), y))
    return before, after


TRAINABLE = [(m, p) for m, row in APPLIES.items() for p, why in row.items() if why is None]


@pytest.mark.parametrize(("model", "plugin"), TRAINABLE, ids=lambda v: str(v))
def test_transformed_models_train(model: str, plugin: str) -> None:
    experiment = PLUGINS[plugin].apply(make_experiment(model), {})
    before, after = train_a_little(experiment)
    assert math.isfinite(after) and after < before, (before, after)


# -- weight-init -------------------------------------------------------------------------


def linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach() for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_weight_init_normal_std_1_as_in_the_reference() -> None:
    variant = WeightInit().apply(make_experiment(), {"std": "1.0"})
    assert variant.notes["weight-init"]["scheme"] == "normal"
    model = built(variant)
    hidden = torch.cat([w.flatten() for w in linear_weights(model)])
    assert abs(float(hidden.std()) - 1.0) < 0.02  # ~107k draws: the std's std is ~0.002
    assert abs(float(hidden.mean())) < 0.02
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, nn.Linear))


def test_weight_init_defaults_to_he_for_relu_models() -> None:
    variant = WeightInit().apply(make_experiment("relu-mlp"), {})
    assert variant.notes["weight-init"]["scheme"] == "he"
    torch.manual_seed(0)
    model = build_mlp(64, 10, depth=3, width=512, activation="relu")
    model = variant.model_transforms[-1](model)
    for w in linear_weights(model):
        fan_in = w.shape[1]
        expected = math.sqrt(2.0 / fan_in)
        assert abs(float(w.std()) / expected - 1.0) < 0.05, (fan_in, float(w.std()), expected)


def test_weight_init_defaults_to_xavier_for_sigmoid_convolutions() -> None:
    variant = WeightInit().apply(make_experiment("cnn"), {})
    assert variant.notes["weight-init"] == {
        "scheme": "xavier",
        "std": None,
        "gain_from": "sigmoid",
        "layers": ["0", "2", "4", "6", "9"],
        "output_gain_1": "9",  # the logits: no sigmoid follows the output layer
    }
    model = built(variant)
    conv = model[2].weight.detach()  # (4, 4, 3, 3): fan_in = fan_out = 36
    pooled = torch.cat([model[i].weight.detach().flatten() for i in (2, 4, 6)])
    # Xavier with the sigmoid gain of 4 (sigmoid'(0) = 1/4), not PyTorch's gain of 1.
    expected = 4.0 * math.sqrt(2.0 / (36 + 36))
    assert conv.shape == (4, 4, 3, 3)
    assert abs(float(pooled.std()) / expected - 1.0) < 0.12  # 432 draws


# -- relu --------------------------------------------------------------------------------


def test_relu_replaces_every_hidden_sigmoid_and_keeps_names() -> None:
    variant = Relu().apply(make_experiment(), {})
    assert variant.notes["relu"]["replaced"] == [str(i) for i in range(2, 16, 2)]
    assert variant.notes["relu"]["kinds"] == {"Sigmoid": 7}
    model = built(variant)
    assert [type(m).__name__ for m in model][2:15:2] == ["ReLU"] * 7
    assert not any(isinstance(m, nn.Sigmoid) for m in model.modules())


def test_relu_can_swap_to_gelu_in_a_custom_forward_model() -> None:
    variant = Relu().apply(make_experiment("tower"), {"to": "gelu"})
    model = built(variant)
    assert all(isinstance(a, nn.GELU) for a in model.acts)
    assert variant.notes["relu"]["replaced"] == ["acts.0", "acts.1", "acts.2"]


def test_relu_keeps_an_output_sigmoid() -> None:
    model = nn.Sequential(nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 1), nn.Sigmoid())
    experiment = make_experiment(model_factory=lambda: model, input_shape=(64,))
    variant = Relu().apply(experiment, {})
    rebuilt = variant.build_model()
    assert isinstance(rebuilt[1], nn.ReLU) and isinstance(rebuilt[3], nn.Sigmoid)


# -- batchnorm ---------------------------------------------------------------------------


def test_batchnorm_wraps_every_hidden_linear_but_not_the_output() -> None:
    model = built(BatchNorm().apply(make_experiment(), {}))
    for i in range(1, 15, 2):
        assert isinstance(model[i], nn.Sequential)
        assert isinstance(model[i][0], nn.Linear)
        assert isinstance(model[i][1], nn.BatchNorm1d) and model[i][1].num_features == 128
        assert isinstance(model[i + 1], nn.Sigmoid)  # BatchNorm runs before the activation
    assert isinstance(model[15], nn.Linear)


def test_batchnorm_on_convolutions_and_custom_forward() -> None:
    cnn = built(BatchNorm().apply(make_experiment("cnn"), {}))
    for i in (0, 2, 4, 6):
        assert isinstance(cnn[i][1], nn.BatchNorm2d) and cnn[i][1].num_features == 4
    assert isinstance(cnn[9], nn.Linear)
    variant = BatchNorm().apply(make_experiment("tower"), {})
    assert variant.notes["batchnorm"]["after"] == ["inp", "layers.0", "layers.1", "layers.2"]
    tower = built(variant)
    assert isinstance(tower.inp[1], nn.BatchNorm1d)
    assert isinstance(tower.layers[2][1], nn.BatchNorm1d)
    assert isinstance(tower.out, nn.Linear)


def test_batchnorm_normalises_the_pre_activations() -> None:
    model = built(BatchNorm().apply(make_experiment(), {}))
    seen: list[torch.Tensor] = []
    model[5][0].register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    model[5][1].register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    model.train()
    model(batch(64)[0])
    z, normalised = seen
    expected = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(normalised, expected, atol=1e-5)
    assert float(normalised.var(0).min()) > 0.9  # the raw pre-activations' is ~0.01


def test_batchnorm_does_not_apply_twice() -> None:
    once = BatchNorm().apply(make_experiment(), {})
    assert BatchNorm().why_not(once, {}) == (
        "every hidden Linear/Conv layer is already followed by BatchNorm"
    )


# -- skip --------------------------------------------------------------------------------


def test_skip_default_span_2_on_the_reference_mlp() -> None:
    variant = Skip().apply(make_experiment(), {})
    assert variant.notes["skip"] == {"span": 2, "skips": ["h3+h1", "h5+h3", "h7+h5"]}
    model = built(variant)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "Sigmoid"] + ["Residual"] * 3 + ["Linear"]


def test_skip_reproduces_the_reference_layout_exactly() -> None:
    variant = Skip().apply(make_experiment(), {"blocks": "2-3,5-7"})
    assert variant.notes["skip"]["skips"] == ["h3+h1", "h7+h4"]
    torch.manual_seed(0)
    plain = sigmoid_mlp()
    linears = [m for m in plain if isinstance(m, nn.Linear)]
    model = variant.model_transforms[-1](plain)
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "Flatten",
        "Linear",
        "Sigmoid",
        "Residual",
        "Linear",
        "Sigmoid",
        "Residual",
        "Linear",
    ]
    assert len(model[3].body) == 4 and len(model[6].body) == 6
    # The reference's forward, written out: skips added after the sigmoid.
    x = batch(4)[0]
    h = {0: x.flatten(1)}
    for k in range(1, 8):
        h[k] = torch.sigmoid(linears[k - 1](h[k - 1]))
        if k == 3:
            h[3] = h[3] + h[1]
        if k == 7:
            h[7] = h[7] + h[4]
    expected = linears[7](h[7])
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_skip_on_a_cnn_wraps_only_the_shape_keeping_blocks() -> None:
    variant = Skip().apply(make_experiment("cnn"), {})
    model = built(variant)
    # Block 1 changes 1 -> 4 channels; block 4 ends with Flatten; 2 and 3 keep (4, 8, 8).
    assert [type(m).__name__ for m in model] == [
        "Conv2d",
        "Sigmoid",
        "Residual",
        "Conv2d",
        "Sigmoid",
        "Flatten",
        "Linear",
    ]
    assert variant.notes["skip"]["skips"] == ["h3+h1"]


def test_skip_recurses_into_nested_sequentials() -> None:
    def factory() -> nn.Module:
        blocks = [nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(4)]
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 16),
            nn.Sequential(nn.Sequential(*blocks)),  # a stack inside a wrapper
            nn.Linear(16, 10),
        )

    variant = Skip().apply(make_experiment(model_factory=factory), {"span": "1"})
    model = built(variant)
    assert isinstance(model[2], Residual)  # the whole wrapper keeps (2, 16): outermost first
    assert variant.notes["skip"]["skips"] == ["h2+h1"]


def test_residual_adds_the_identity() -> None:
    layer = nn.Linear(3, 3)
    x = torch.randn(2, 3)
    assert torch.equal(Residual(layer)(x), layer(x) + x)


# -- gradnorm ----------------------------------------------------------------------------


def test_grad_normalize_backward_matches_an_independent_formula() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(5, 7, generator=g, dtype=torch.float64) * 1e-4 + 3e-5
    y = GradNormalize.apply(x, 1e-6)
    assert torch.equal(y, x)
    y.backward(upstream)
    u = upstream.numpy()
    expected = (u - u.mean()) / (np.std(u, ddof=1) + 1e-6)
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    # Per sample (the plugin's default): the same, divided by the 5 rows of the batch.
    x.grad = None
    GradNormalize.apply(x, 1e-6, True).backward(upstream)
    np.testing.assert_allclose(x.grad.numpy(), expected / 5, rtol=1e-12)


def test_grad_normalize_leaves_a_single_number_alone() -> None:
    x = torch.tensor([2.0], requires_grad=True)
    GradNormalize.apply(x, 1e-6).backward(torch.tensor([0.5]))
    assert x.grad is not None and float(x.grad) == 0.5


def test_gradnorm_wraps_each_hidden_activation() -> None:
    variant = GradNorm().apply(make_experiment(), {"eps": "1e-5", "scale": "unit"})
    model = built(variant)
    for i in range(2, 16, 2):
        assert isinstance(model[i][0], nn.Sigmoid)
        assert isinstance(model[i][1], GradNormLayer) and model[i][1].eps == 1e-5
        assert model[i][1].scale == "unit"
    assert isinstance(model[15], nn.Linear)


def test_gradnorm_standardises_the_gradient_reaching_each_layer() -> None:
    model = built(GradNorm().apply(make_experiment(), {}))
    grads: dict[int, torch.Tensor] = {}

    def keep(index: int):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
            out.register_hook(lambda g: grads.__setitem__(index, g.detach()))

        return hook

    for i in range(2, 16, 2):
        model[i][0].register_forward_hook(keep(i))  # the sigmoid's output feeds GradNorm
    x, y = batch()
    nn.functional.cross_entropy(model(x), y).backward()
    # The gradient into a sigmoid's output is what GradNorm passes down: standardised
    # (std s / (s + eps) for a raw std s, just under 1), per sample of the batch.
    for i in range(2, 16, 2):
        g = grads[i] * x.shape[0]
        assert abs(float(g.mean())) < 1e-6 and 0.99 < float(g.std()) <= 1.0
    # Standardisation undoes the geometric shrinking: first and last layer get grads
    # of the same order instead of a ratio of ~1e-6.
    first, last = model[1].weight.grad, model[13].weight.grad
    assert first is not None and last is not None
    assert 0.01 < float(first.norm() / last.norm()) < 100


def test_gradnorm_in_a_tower_and_not_twice() -> None:
    once = GradNorm().apply(make_experiment("tower"), {})
    assert once.notes["gradnorm"]["after"] == ["acts.0", "acts.1", "acts.2"]
    assert GradNorm().why_not(once, {}) is not None


# -- layerwise ---------------------------------------------------------------------------


def test_default_blocks_and_epoch_split() -> None:
    assert default_blocks(7) == [2, 2, 2, 1]
    assert default_blocks(4) == [2, 2]
    assert default_blocks(2) == [1, 1]
    assert split_epochs(100, 7) == [14] * 5 + [15] * 2 and sum(split_epochs(100, 7)) == 100
    assert split_epochs(14, 7) == [2] * 7
    assert split_epochs(3, 7) == [1] * 7  # never a stage of 0 epochs


def reference_stages(**options: str) -> tuple[nn.Sequential, list[Stage]]:
    variant = Layerwise().apply(make_experiment(), dict(options))
    model = built(variant)
    assert variant.stage_plan is not None and isinstance(model, nn.Sequential)
    return model, variant.stage_plan(model)


def test_layerwise_schedule_for_2_2_2_1() -> None:
    model, stages = reference_stages()
    assert [s.name for s in stages] == [
        "1/7 train layers 1-2 + head",
        "2/7 train layers 3-4 + head, layers 1-2 frozen",
        "3/7 fine-tune layers 1-4 + head",
        "4/7 train layers 5-6 + head, layers 1-4 frozen",
        "5/7 fine-tune layers 1-6 + head",
        "6/7 train layer 7 + output layer, layers 1-6 frozen",
        "7/7 fine-tune all 7 layers + output layer",
    ]
    assert [s.epochs for s in stages] == [2] * 7  # 14 epochs, the baseline's budget
    assert all(s.batch_size == 8 for s in stages)  # the reference ratio 1/8, at least 8
    assert stages[-1].model is model and stages[-1].trainable is None

    lin = [m for m in model if isinstance(m, nn.Linear)]  # L1..L7, output
    s1 = stages[0].model
    assert [m is model[i] for i, m in enumerate(list(s1)[:5])] == [True] * 5
    head1 = s1[5]
    assert isinstance(head1, nn.Sequential) and head1[0].in_features == 128
    assert head1[0].out_features == 10 and head1[0] is not lin[7]

    def ids(params: list[nn.Parameter] | None) -> set[int]:
        assert params is not None
        return {id(p) for p in params}

    def params_of(*modules: nn.Module) -> set[int]:
        return {id(p) for m in modules for p in m.parameters()}

    s2 = stages[1]
    assert isinstance(s2.model[0], Frozen)
    assert ids(s2.trainable) == params_of(lin[2], lin[3], s2.model[-1])
    assert stages[2].trainable is None and stages[2].model[-1] is s2.model[-1]  # same head
    assert ids(stages[3].trainable) == params_of(lin[4], lin[5], stages[3].model[-1])
    assert ids(stages[5].trainable) == params_of(lin[6], lin[7])  # the real output layer
    assert stages[5].model[-1] is lin[7]
    frozen = [m for m in stages[5].model if isinstance(m, Frozen)]
    assert params_of(*frozen) == params_of(*lin[:6])
    # Every stage's layers carry the full model's names; the fresh heads are "head".
    names = {id(m): n for n, m in model.named_modules()}
    for stage in stages:
        for name, module in stage.model.named_children():
            inner = module._frozen_module if isinstance(module, Frozen) else module
            assert name == (names.get(id(inner)) or "head"), (stage.name, name)


def test_layerwise_training_a_stage_leaves_frozen_layers_bit_identical() -> None:
    model, stages = reference_stages()
    lin = [m for m in model if isinstance(m, nn.Linear)]
    x, y = batch()
    stage = stages[3]  # layers 1-4 frozen, 5-6 and a head trained
    frozen_layers = {"1", "3", "5", "7"}  # L1..L4 in the Sequential
    state = model.state_dict()
    frozen = {k: v.clone() for k, v in state.items() if k.split(".")[0] in frozen_layers}
    before = lin[4].weight.detach().clone()
    # Even an optimizer over every parameter of the stage model cannot move frozen layers.
    optimizer = torch.optim.SGD(stage.model.parameters(), lr=0.5, weight_decay=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(stage.model(x), y).backward()
        optimizer.step()
    assert all(lin[i].weight.grad is None for i in range(4))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())
    assert not torch.equal(lin[4].weight, before)
    # The fine-tune stage after it trains the frozen layers again.
    tune = stages[4]
    nn.functional.cross_entropy(tune.model(x), y).backward()
    assert lin[0].weight.grad is not None and float(lin[0].weight.grad.abs().sum()) > 0


def test_layerwise_options() -> None:
    _, stages = reference_stages(blocks="3,3,1", epochs="1", **{"batch-size": "64"})
    assert len(stages) == 5
    assert [s.epochs for s in stages] == [1] * 5 and {s.batch_size for s in stages} == {64}
    _, stages = reference_stages(blocks="4,3", epochs="5,1,2")
    assert [s.epochs for s in stages] == [5, 1, 2]
    assert stages[0].name == "1/3 train layers 1-4 + head"
    model, stages = reference_stages(blocks="7")
    assert len(stages) == 1 and stages[0].model is model and stages[0].epochs == 14


def test_layerwise_on_a_cnn_gives_flattening_heads() -> None:
    variant = Layerwise().apply(make_experiment("cnn"), {})
    assert variant.notes["layerwise"]["blocks"] == [2, 2]
    model = built(variant)
    assert variant.stage_plan is not None
    stages = variant.stage_plan(model)
    assert len(stages) == 3
    head = stages[0].model[-1]
    assert isinstance(head[0], nn.Flatten) and head[1].in_features == 4 * 8 * 8
    x, _ = batch(3)
    assert stages[0].model(x).shape == (3, 10)


# -- surgery's trace ---------------------------------------------------------------------


def test_trace_orders_by_execution_and_restores_modes() -> None:
    model = Tower()
    model.train()
    bn = nn.BatchNorm1d(16)
    model.inp = nn.Sequential(model.inp, bn)
    calls = trace(model, SHAPE)
    names = [c.name for c in calls]
    assert names[:4] == ["", "inp", "inp.0", "inp.1"]
    assert names.index("layers.0") < names.index("out")
    assert {c.name: c.out_shape for c in calls}["inp.0"] == (2, 16)
    assert model.training and bn.training
    assert int(bn.num_batches_tracked) == 0  # eval mode: running statistics untouched
    assert not model.inp._forward_hooks and not model.inp._forward_pre_hooks


class SharedSigmoid(nn.Module):
    """One `self.act` after every conv, the first conv frozen (a pretrained stem)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else 4, 4, 3, padding=1)
                                    for i in range(4)])
        self.act = nn.Sigmoid()
        self.head = nn.Linear(4, 10)
        self.convs[0].requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = self.act(conv(x))
        return self.head(x.mean((2, 3)))


def test_relu_reinitialises_every_layer_a_shared_activation_follows_but_frozen_ones() -> None:
    experiment = make_experiment(model_factory=SharedSigmoid, input_shape=(1, 8, 8))
    torch.manual_seed(0)
    original = SharedSigmoid()
    variant = Relu().apply(experiment, {})
    assert variant.notes["relu"]["replaced"] == ["act"]
    assert variant.notes["relu"]["reinitialised"] == ["convs.1", "convs.2", "convs.3"]
    torch.manual_seed(0)
    model = variant.build_model()
    assert torch.equal(model.convs[0].weight, original.convs[0].weight)  # frozen: kept
    for conv in model.convs[1:]:
        assert not conv.bias.any()  # He with zero bias, for each of the three
        assert abs(float(conv.weight.detach().std()) / math.sqrt(2 / 36) - 1) < 0.25


def test_weight_init_reads_functional_activations_and_keeps_frozen_layers() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 10)
            self.a.requires_grad_(False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.nn.functional.relu(self.b(torch.nn.functional.relu(self.a(x)))))

    experiment = make_experiment(model_factory=Functional, input_shape=(64,))
    variant = WeightInit().apply(experiment, {})
    note = variant.notes["weight-init"]
    assert (note["scheme"], note["gain_from"], note["layers"]) == ("he", "relu", ["b", "c"])
    torch.manual_seed(0)
    kept = Functional().a.weight.clone()
    torch.manual_seed(0)
    model = variant.build_model()
    assert torch.equal(model.a.weight, kept)
    assert abs(float(model.b.weight.detach().std()) / math.sqrt(2 / 256) - 1) < 0.05


def test_weight_init_gives_recurrent_layers_orthogonal_weights() -> None:
    class Rows(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(8, 16, batch_first=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.rnn(x.reshape(x.shape[0], 8, 8))[0][:, -1])

    variant = WeightInit().apply(make_experiment(model_factory=Rows, input_shape=(64,)), {})
    assert variant.notes["weight-init"]["layers"] == ["rnn", "fc"]
    lstm = variant.build_model().rnn
    for gate in lstm.weight_hh_l0.detach().split(16):
        assert torch.allclose(gate @ gate.T, torch.eye(16), atol=1e-5)
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach()
    assert torch.equal(bias[16:32], torch.ones(16)) and not bias[:16].any()


def test_layerwise_records_each_layer_under_its_own_name_in_every_stage(tmp_path) -> None:
    # A frozen layer keeps its name (not "0.body.1") and its weights; a stage's "1" is
    # the full model's "1"; a frozen layer reports no gradient, not the last stage's.
    import json

    from vgdiag.cli.app import main

    out = tmp_path / "lw"
    assert main(["run", "--headless", "--depth", "4", "--width", "16", "--epochs", "3",
                 "--every", "1", "--plugin", "layerwise", "--out", str(out)]) in (0, 1)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stages, steps, stage = {}, [], -1
    for line in lines:
        if line["type"] == "stage":
            stage = line["index"]
            stages[stage] = line
        elif line["type"] == "step":
            steps.append((stage, line))
    assert len(stages) == 3  # 2,2: train 1-2 + head, train 3-4 + output, fine-tune all
    names = {n for _, s in steps for n in s["layers"]}
    assert not any("body" in n or "_frozen" in n for n in names), names
    frozen = [s for st, s in steps if st == 1]
    first = [n for n in ("1", "3") if n in frozen[0]["layers"]]
    assert first == ["1", "3"]
    for name in first:  # frozen in stage 2: its weights do not move, and no gradient
        norms = {s["layers"][name]["weight_norm"] for s in frozen}
        assert len(norms) == 1, (name, norms)
        assert all(s["layers"][name]["grad_norm"] in (None, 0.0) for s in frozen)
    last_of_stage_1 = [s for st, s in steps if st == 0][-1]["layers"]["1"]["weight_norm"]
    assert frozen[0]["layers"]["1"]["weight_norm"] == pytest.approx(last_of_stage_1, rel=1e-3)
    # At initialisation the output layer is the first stage's head (the full model's
    # layers are not all there yet): the first/last ratio is read against it.
    from vgdiag.engine.gradflow import gradient_profile
    from vgdiag.runs.reader import read_run

    run = read_run(out)
    first = steps[0][1]["layers"]
    profile = gradient_profile(run.records[0], run.layers)
    assert profile["output"] == "head.0"
    assert profile["ratio"] == pytest.approx(
        first["1"]["grad_norm"] / first["head.0"]["grad_norm"], rel=1e-9)


def test_weight_init_starts_a_sigmoid_net_near_the_loss_of_guessing() -> None:
    # Sigmoid's gain of 4 belongs to the hidden layers: on the output layer it made the
    # logits 4x too large, a first loss near 6 where guessing is ln(10) = 2.3.
    variant = WeightInit().apply(make_experiment(), {})
    torch.manual_seed(0)
    model = variant.build_model()
    x, y = batch()
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model(x), y))
    assert loss < 1.3 * math.log(10), loss
    out = model[-1]
    assert abs(float(out.weight.std()) / math.sqrt(2 / (out.in_features + 10)) - 1) < 0.2


def test_layerwise_stages_keep_a_shared_activation_and_a_child_named_head() -> None:
    from collections import OrderedDict

    from vgdiag_plugins.layerwise import build_stages

    act = nn.Tanh()  # one module after every layer: each stage must keep every call
    shared = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), act, nn.Linear(8, 8), act,
                           nn.Linear(8, 8), act, nn.Linear(8, 10))
    stages = build_stages(shared, input_shape=SHAPE, blocks=(1, 1, 1), epochs=(1,) * 5,
                          batch_size=None)
    grow = stages[1].model  # layer 1 frozen, layer 2 + a head trained
    assert [type(m).__name__ for m in grow] == [
        "Frozen", "Frozen", "Frozen", "Linear", "Tanh", "Sequential"]
    assert list(grow._modules)[:5] == ["0", "1", "2", "3", "4"]
    named = nn.Sequential(OrderedDict([
        ("flat", nn.Flatten()), ("a", nn.Linear(64, 8)), ("ra", nn.ReLU()),
        ("head", nn.Linear(8, 8)), ("rh", nn.ReLU()), ("c", nn.Linear(8, 8)),
        ("rc", nn.ReLU()), ("out", nn.Linear(8, 10))]))
    stages = build_stages(named, input_shape=SHAPE, blocks=(1, 1, 1), epochs=(1,) * 5,
                          batch_size=None)
    grow = stages[1].model
    assert list(grow._modules) == ["flat", "a", "ra", "head", "rh", "head_1"]
    assert grow.head is named.head and grow.head_1 is not named.head
    x, y = batch(4)
    assert grow(x).shape == (4, 10)
