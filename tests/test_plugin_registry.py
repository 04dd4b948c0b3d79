"""Plugin discovery through entry points, option parsing, and a third-party package."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from torch import nn

from vgdiag import __version__
from vgdiag.engine.experiment import Experiment, TrainConfig, sgd
from vgdiag.engine.models import build_mlp
from vgdiag.errors import UserError
from vgdiag.plugin_api import (
    ENTRY_POINT_GROUP,
    Plugin,
    apply_plugins,
    discover_plugins,
    get_plugin,
    parse_plugin_opts,
    resolve_plugin_names,
    validate_plugin_opts,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "vgdiag-example-plugin"
# The reference experiment's order, which the built-ins' ranks give.
BUILTIN_ORDER = ("weight-init", "relu", "adam", "batchnorm", "skip", "layerwise", "gradnorm")


def ep(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def experiment() -> Experiment:
    return Experiment(
        name="baseline",
        model_factory=lambda: build_mlp(64, 10, depth=3, width=16),
        optimizer_factory=sgd(0.01),
        loss_fn=nn.functional.cross_entropy,
        train=TrainConfig(epochs=5),
        input_shape=(1, 8, 8),
        num_classes=10,
    )


def test_builtins_are_discovered_through_entry_points_in_reference_order() -> None:
    plugins, errors = discover_plugins()
    assert list(plugins)[: len(BUILTIN_ORDER)] == list(BUILTIN_ORDER)
    for name in BUILTIN_ORDER:
        plugin = plugins[name]
        assert isinstance(plugin, Plugin) and plugin.name == name
        assert plugin.origin == f"vgdiag {__version__} (built-in)"
        assert plugin.summary and "\n" not in plugin.summary
        assert all(isinstance(h, str) and h for h in plugin.options.values())
    assert not [e for e in errors if any(f"'{n}'" in e for n in BUILTIN_ORDER)]


def test_broken_entry_points_are_reported_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "explodes_on_import.py").write_text("raise RuntimeError('bad build')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins, errors = discover_plugins(
        [
            ep("missing", "no_such_module_for_vgdiag:Thing"),
            ep("explodes", "explodes_on_import:Plugin"),
            ep("not-a-plugin", "math:pi"),
            ep("not-a-plugin-class", "collections:OrderedDict"),
            ep("adam", "vgdiag_plugins.adam:Adam"),
            ep("adam", "vgdiag_plugins.relu:Relu"),  # the name is taken
            ep("renamed", "vgdiag_plugins.relu:Relu"),
        ]
    )
    assert list(plugins) == ["renamed", "adam"]  # by rank: the renamed Relu keeps relu's
    assert type(plugins["adam"]).__name__ == "Adam"
    assert plugins["renamed"].name == "renamed"  # the entry-point name is what users type
    assert plugins["renamed"].origin == "unknown distribution"
    assert len(errors) == 5
    assert "'missing'" in errors[0] and "ModuleNotFoundError" in errors[0]
    assert "'explodes'" in errors[1] and "RuntimeError: bad build" in errors[1]
    assert "'not-a-plugin'" in errors[2] and "is not a vgdiag.plugin_api.Plugin" in errors[2]
    assert "'not-a-plugin-class'" in errors[3] and "is not a" in errors[3]
    assert "'adam'" in errors[4] and "already taken" in errors[4]
    assert all("\n" not in e for e in errors)


def test_a_plugin_instance_can_be_registered_too() -> None:
    from vgdiag_plugins.adam import Adam

    global ADAM_INSTANCE
    ADAM_INSTANCE = Adam()
    plugins, errors = discover_plugins([ep("adam2", f"{__name__}:ADAM_INSTANCE")])
    assert not errors and plugins["adam2"] is ADAM_INSTANCE


ADAM_INSTANCE: Plugin | None = None


def test_get_plugin_lists_the_available_ones() -> None:
    assert get_plugin("relu").name == "relu"
    with pytest.raises(UserError, match="unknown plugin 'rleu': available plugins are weight-"):
        get_plugin("rleu")


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], {}),
        (["weight-init.std=1.0"], {"weight-init": {"std": "1.0"}}),
        (
            ["adam.lr=3e-4", "skip.blocks=2-3,5-7", "adam.lr=1e-3"],
            {"adam": {"lr": "1e-3"}, "skip": {"blocks": "2-3,5-7"}},
        ),
        ([" layerwise.batch-size = 64 "], {"layerwise": {"batch-size": "64"}}),
        (["x.eq=a=b"], {"x": {"eq": "a=b"}}),
    ],
)
def test_parse_plugin_opts(items: list[str], expected: dict[str, dict[str, str]]) -> None:
    assert parse_plugin_opts(items) == expected


@pytest.mark.parametrize("item", ["std=1.0", "weight-init.std", "weight-init.=1", ".std=1", "a.b="])
def test_parse_plugin_opts_rejects_malformed_items(item: str) -> None:
    with pytest.raises(UserError, match="PLUGIN.OPTION=VALUE"):
        parse_plugin_opts([item])


def test_resolve_plugin_names() -> None:
    available = ["weight-init", "relu", "adam"]
    assert resolve_plugin_names("all", available) == available
    assert resolve_plugin_names(" ALL ", available) == available
    assert resolve_plugin_names("adam, relu,adam,", available) == ["adam", "relu"]
    with pytest.raises(UserError, match="unknown plugin 'batchnorm'"):
        resolve_plugin_names("relu,batchnorm", available)
    with pytest.raises(UserError, match="no plugin named"):
        resolve_plugin_names(" , ", available)
    assert resolve_plugin_names("all")[: len(BUILTIN_ORDER)] == list(BUILTIN_ORDER)


def test_validate_plugin_opts() -> None:
    validate_plugin_opts({"weight-init": {"std": "1.0"}, "adam": {"lr": "1e-3"}})
    with pytest.raises(UserError, match="unknown plugin 'nope'"):
        validate_plugin_opts({"nope": {"x": "1"}})
    with pytest.raises(UserError, match="valid options: lr"):
        validate_plugin_opts({"adam": {"beta": "1"}})


def test_apply_plugins_in_order_and_refuse_what_does_not_apply() -> None:
    base = experiment()
    variant = apply_plugins(base, ["relu", "adam"], {"adam": {"lr": "3e-4"}})
    assert variant.plugins == ["relu", "adam"]
    assert variant.notes["adam"]["lr"] == 3e-4 and variant.train.lr == 3e-4
    assert base.plugins == [] and base.optimizer_name == "sgd"
    with pytest.raises(UserError, match="plugin 'relu' does not apply .*no saturating"):
        apply_plugins(variant, ["relu"])


def _pip_available() -> bool:
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


DISCOVER_AND_APPLY = textwrap.dedent(
    """
    import torch
    from torch import nn
    from vgdiag.engine.experiment import Experiment, TrainConfig, sgd
    from vgdiag.engine.models import build_mlp
    from vgdiag.plugin_api import discover_plugins

    plugins, errors = discover_plugins()
    assert not errors, errors
    plugin = plugins["momentum"]
    base = Experiment("baseline", lambda: build_mlp(64, 10, depth=2, width=8), sgd(0.05),
                      nn.functional.cross_entropy, TrainConfig(lr=0.05), input_shape=(1, 8, 8))
    variant = plugin.apply(base, {"beta": "0.8"})
    optimizer = variant.optimizer_factory(variant.build_model().parameters())
    print(plugin.origin, "|", variant.plugins, variant.optimizer_name,
          optimizer.defaults["momentum"], optimizer.defaults["lr"],
          plugin.why_not(plugins["adam"].apply(base, {}), {}))
    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import recommend
    stalled = recommend([Finding("loss_stalled", "error", [], {}, "stalled")])[0]
    print("recommended:", ",".join(stalled.recommend))
    """
)


@pytest.mark.slow  # a real pip build and a fresh interpreter: 3-9 s
def test_example_third_party_package_installs_and_is_discovered(tmp_path: Path) -> None:
    if not _pip_available():
        pytest.skip("pip is not available in this environment to install the example plugin")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed, so pip cannot build the example plugin offline")
    # Build from a copy: an in-tree build would leave build/ and egg-info in the repo.
    source = tmp_path / "src"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = subprocess.run(
        [sys.executable, "-c", DISCOVER_AND_APPLY],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines() == [
        "vgdiag-example-plugin 0.1.0 | ['momentum'] sgd-momentum 0.8 0.05 "
        "only changes plain SGD; this experiment uses adam",
        # a third-party plugin is recommended like a built-in, after them by rank
        "recommended: weight-init,relu,adam,batchnorm,skip,layerwise,momentum",
    ]


def test_recommendations_come_from_what_plugins_address() -> None:
    from vgdiag.engine.records import Finding
    from vgdiag.plugin_api import recommend

    class Fixer(Plugin):
        name = "fixer"
        addresses = ("dead_units",)
        rank = 5

    plugins, _ = discover_plugins()
    found = [Finding("dead_units", "warning", ["0"], {}, "dead"),
             Finding("no_such_finding", "info", [], {}, "other")]
    dead, other = recommend(found, [*plugins.values(), Fixer()])
    assert dead.recommend[0] == "fixer"  # rank, not built-in or not, decides the order
    assert set(dead.recommend[1:]) == {n for n, p in plugins.items() if "dead_units" in p.addresses}
    assert other.recommend == []
    assert found[0].recommend == []  # the input is left alone


def test_a_plugin_that_says_its_fix_is_in_place_is_not_advised() -> None:
    from vgdiag.engine.records import Finding, LayerStats, StepRecord
    from vgdiag.plugin_api import recommend

    class Fixer(Plugin):
        name = "fixer"
        addresses = ("dead_units",)

        def in_place(self, records, layers) -> bool:  # type: ignore[no-untyped-def]
            return all(math.isfinite(s.act_dead) for r in records for s in r.layers.values())

    found = [Finding("dead_units", "warning", ["0"], {}, "dead")]
    measured = StepRecord(step=0, epoch=0, loss=1.0, layers={"0": LayerStats(act_dead=0.5)})
    unmeasured = StepRecord(step=0, epoch=0, loss=1.0, layers={"0": LayerStats()})
    assert recommend(found, [Fixer()], records=[measured])[0].recommend == []
    assert recommend(found, [Fixer()], records=[unmeasured])[0].recommend == ["fixer"]
    assert recommend(found, [Fixer()])[0].recommend == ["fixer"]  # no run: no evidence


def test_the_diagnosis_recommends_the_installed_plugins() -> None:
    import torch

    from vgdiag.engine.diagnosis import diagnose
    from vgdiag.engine.probe import Probe

    torch.manual_seed(0)
    model = build_mlp(64, 10, depth=7, width=32)  # PyTorch's default init: vanishing
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = Probe(model, optimizer, every=1)
    x, y = torch.rand(64, 1, 8, 8), torch.randint(0, 10, (64,))
    loss = nn.functional.cross_entropy(model(x), y)
    probe.observe_loss(loss)
    loss.backward()
    optimizer.step()
    records = probe.drain()
    findings = diagnose(records, probe.layers, (), 10)
    probe.close()
    plugins, _ = discover_plugins()
    assert any(f.id == "vanishing_gradient" for f in findings)
    for f in findings:
        assert f.recommend == [n for n, p in plugins.items() if f.id in p.addresses], f.id
