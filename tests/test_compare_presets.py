"""The `reference` preset is the reference experiment, field by field."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from vgdiag.errors import UserError
from vgdiag.inputs.mnist import split_train_val
from vgdiag.inputs.recipe import build_experiment, load_data
from vgdiag.plugin_api import get_plugin
from vgdiag.runs.compare_cli import CompareRequest, resolve
from vgdiag.runs.presets import REFERENCE, get_preset

# REFERENCE.md, "Published results of that experiment".
PUBLISHED = {
    "baseline": 0.100, "weight-init-std1": 0.736, "weight-init-std10": 0.193, "relu": 0.788,
    "adam": 0.859, "batchnorm": 0.879, "skip": 0.676, "gradnorm": 0.537, "layerwise": 0.876,
}


def test_the_run_options_are_the_reference_recipe() -> None:
    opts = REFERENCE.run_options({}, {})
    assert (opts.data, opts.depth, opts.width, opts.activation) == (
        "fashion-mnist", 7, 128, "sigmoid")
    assert (opts.optimizer, opts.lr, opts.batch_size, opts.epochs, opts.seed) == (
        "sgd", 0.01, 512, 100, 42)
    assert opts.init == "default" and opts.loss == "cross-entropy"
    train, val = split_train_val(60_000, opts.seed)  # the 90/10 split with seed 42
    assert (len(train), len(val)) == (54_000, 6_000)


def test_nine_variants_with_the_published_accuracies() -> None:
    assert [s.name for s in REFERENCE.variants] == list(PUBLISHED)
    assert {s.name: s.published for s in REFERENCE.variants} == PUBLISHED
    assert REFERENCE.variants[0].plugin is None and REFERENCE.variants[0].overrides == {}


def built(name: str) -> tuple[nn.Module, object]:
    """The variant's model and experiment, on 28x28 synthetic stand-in data."""
    spec = next(s for s in REFERENCE.variants if s.name == name)
    opts = dataclasses.replace(spec.run_options(REFERENCE.run_options({}, {})),
                               data="synthetic", synthetic_size=200)
    data = load_data(opts)
    experiment = build_experiment(opts, data)
    if spec.plugin:
        experiment = get_plugin(spec.plugin).apply(experiment, spec.options)
    torch.manual_seed(0)
    return experiment.build_model(), experiment


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def test_the_baseline_keeps_pytorchs_init_and_the_mitigations_draw_n_0_005() -> None:
    base, _ = built("baseline")
    first = linears(base)[0]
    assert first.weight.abs().max() <= 1 / 784**0.5 and first.bias.abs().max() > 0
    for name in ("relu", "adam", "batchnorm", "skip", "gradnorm", "layerwise"):
        model, _ = built(name)
        for layer in linears(model):
            assert abs(float(layer.weight.detach().std()) - 0.05) < 0.005, name
            assert float(layer.bias.detach().abs().max()) == 0.0, name


@pytest.mark.parametrize(("name", "std"), [("weight-init-std1", 1.0), ("weight-init-std10", 10.0)])
def test_weight_increasing_at_std_1_and_10(name: str, std: float) -> None:
    model, _ = built(name)
    for layer in linears(model):
        assert abs(float(layer.weight.detach().std()) / std - 1) < 0.1
        assert float(layer.bias.detach().abs().max()) == 0.0


def test_relu_skip_gradnorm_adam_and_layerwise_as_described() -> None:
    relu, _ = built("relu")
    assert sum(isinstance(m, nn.ReLU) for m in relu.modules()) == 7
    assert not any(isinstance(m, nn.Sigmoid) for m in relu.modules())
    _, skip = built("skip")
    assert skip.notes["skip"]["skips"] == ["h3+h1", "h7+h4"]  # added after the sigmoid
    gradnorm, _ = built("gradnorm")
    assert sum(type(m).__name__ == "GradNormLayer" for m in gradnorm.modules()) == 7
    _, adam = built("adam")
    assert adam.optimizer_name == "adam" and adam.train.lr == 1e-3
    model, layerwise = built("layerwise")
    stages = layerwise.stage_plan(model)
    assert len(stages) == 7 and {s.batch_size for s in stages} == {64}
    assert layerwise.notes["layerwise"]["blocks"] == [2, 2, 2, 1]
    # A fresh head and a fresh optimizer per stage: heads are new Linear(128, 10)s.
    heads = {id(s.model[-1]) for s in stages[:-1] if isinstance(s.model, nn.Sequential)}
    assert len(heads) >= 3


def request(**fields: object) -> CompareRequest:
    return CompareRequest(run_fields=dict(fields), defaults={}, preset="reference")


def test_explicit_options_override_the_preset() -> None:
    from vgdiag.plugin_api import discover_plugins

    available, _ = discover_plugins()
    opts, specs, jobs = resolve(request(epochs=3, data="synthetic"), available)
    assert (opts.epochs, opts.data, opts.batch_size, opts.lr) == (3, "synthetic", 512, 0.01)
    assert jobs == REFERENCE.jobs and len(specs) == 9
    opts, specs, _ = resolve(dataclasses.replace(
        request(), plugins="adam,skip", plugin_opts={"adam": {"lr": "3e-4"}}, seeds=2,
        jobs=1), available)
    assert [s.name for s in specs] == [
        "baseline-seed42", "baseline-seed43", "adam-seed42", "adam-seed43",
        "skip-seed42", "skip-seed43"]
    assert specs[2].options == {"lr": "3e-4"}
    # An explicit --init is every variant's: the preset's N(0, 0.05) for the mitigation
    # runs gives way, so the comparison stays like for like.
    opts, specs, _ = resolve(request(init="xavier"), available)
    assert opts.init == "xavier"
    assert all(s.run_options(opts).init == "xavier" for s in specs)
    _, specs, _ = resolve(request(), available)
    assert {s.run_options(opts).init for s in specs if s.plugin} == {"normal:0.05"}


def test_unknown_preset_is_bad_input() -> None:
    with pytest.raises(UserError, match="unknown --preset 'nope': choose one of reference"):
        get_preset("nope")
