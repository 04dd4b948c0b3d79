"""The advice beside each finding fits the model and the cause: real runs, read back."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vgdiag.cli.app import main

FUNCTIONAL = '''
import torch
from torch import nn


class Deep(nn.Module):
    """Seven sigmoid layers called functionally: nothing for a module swap to replace."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(64, 32)] + [nn.Linear(32, 32) for _ in range(6)])
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = x.flatten(1)
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.head(x)
'''

RANDOM_LABELS = '''
import torch


def make(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1200, 16, generator=g)
    y = torch.randint(0, 10, (1200,), generator=g)  # no relation to x: nothing to learn
    return (x[:800], y[:800]), (x[800:1000], y[800:1000]), (x[1000:], y[1000:])
'''


def run(tmp_path: Path, *args: str) -> dict:
    folder = tmp_path / "run"
    code = main(["run", "--headless", "--out", str(folder), *args])
    assert code in (0, 1), code
    return {f["id"]: f for f in json.loads((folder / "summary.json").read_text())["findings"]}


def test_a_learning_rate_too_low_is_named_and_the_gradient_fixes_are_not_advised(tmp_path):
    # He-initialised ReLU net: the gradient flows; lr 1e-5 moves nothing.
    found = run(tmp_path, "--activation", "relu", "--init", "he", "--depth", "3",
                "--width", "32", "--lr", "1e-5", "--epochs", "3")
    stalled, tiny = found["loss_stalled"], found["updates_tiny"]
    assert stalled["recommend"] == [] and stalled["evidence"]["gradients_flow"]
    assert "not a vanishing gradient" in stalled["message"]
    assert tiny["severity"] == "warning" and tiny["recommend"] == ["adam"]
    assert tiny["evidence"]["largest"] < 1e-4
    assert "learning rate is too low for this model: raise it" in tiny["message"]
    assert "vanishing_gradient" not in found


def test_random_labels_point_at_the_labels_not_at_the_gradient(tmp_path):
    data = tmp_path / "random_labels.py"
    data.write_text(RANDOM_LABELS)
    found = run(tmp_path, "--data", f"{data}:make", "--activation", "relu", "--init", "he",
                "--depth", "2", "--width", "32", "--epochs", "4")
    stalled = found["loss_stalled"]
    assert stalled["recommend"] == [] and "labels" in stalled["message"]
    assert "updates_tiny" not in found


def test_the_sigmoid_baseline_keeps_the_gradient_fixes(tmp_path):
    found = run(tmp_path, "--epochs", "2", "--depth", "7", "--width", "32")
    assert "relu" in found["loss_stalled"]["recommend"]
    assert not found["loss_stalled"]["evidence"].get("gradients_flow")


def test_fixes_that_cannot_apply_to_the_model_are_not_advised(tmp_path):
    model = tmp_path / "deep.py"
    model.write_text(FUNCTIONAL)
    found = run(tmp_path, "--model", f"{model}:Deep", "--epochs", "2")
    advised = {p for f in found.values() for p in f["recommend"]}
    from vgdiag.inputs.options import RunOptions
    from vgdiag.inputs.recipe import build_experiment, load_data
    from vgdiag.plugin_api import not_applicable

    opts = RunOptions(model=f"{model}:Deep")
    torch.manual_seed(0)
    skipped = not_applicable(build_experiment(opts, load_data(opts)))
    # No activation module to replace or wrap, no nn.Sequential to add skips to.
    assert {"relu", "gradnorm", "skip", "layerwise"} <= set(skipped)
    assert "function calls in forward" in skipped["relu"]  # torch.sigmoid, not a module
    assert "weight-init" not in skipped and "weight-init" in advised
    assert not advised & set(skipped)
    from vgdiag.plugin_api import discover_plugins

    # ... and without the exclusion they would have been: the run has findings they address
    would = {name for name, p in discover_plugins()[0].items()
             if any(f in p.addresses for f in found)}
    assert would & set(skipped), list(found)


def test_a_folder_diagnosed_again_advises_the_same(tmp_path):
    # Cut off (as kill -9 leaves it), the folder is diagnosed again from its metrics:
    # the plugins that cannot apply stay out of that advice too.
    from vgdiag.runs.reader import read_run

    model = tmp_path / "deep.py"
    model.write_text(FUNCTIONAL)
    run(tmp_path, "--model", f"{model}:Deep", "--epochs", "2")
    path = tmp_path / "run" / "summary.json"
    summary = json.loads(path.read_text())
    assert "relu" in summary["not_applicable"]
    summary["status"] = "running"
    path.write_text(json.dumps(summary))
    again = read_run(tmp_path / "run")
    assert again.status == "cut off" and again.findings
    advised = {p for f in again.findings for p in f.recommend}
    assert advised and not advised & set(summary["not_applicable"])


def test_asking_the_plugins_leaves_every_random_stream_as_it_was():
    # Asked mid-run: a factory that draws (numpy, Python, torch) must not shift the
    # training's draws.
    import random

    import numpy as np

    from vgdiag.engine.experiment import Experiment, TrainConfig, sgd
    from vgdiag.plugin_api import not_applicable

    def factory() -> torch.nn.Module:
        np.random.rand(3)
        random.random()
        return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Sigmoid(),
                                   torch.nn.Linear(8, 2))

    experiment = Experiment(name="t", model_factory=factory, optimizer_factory=sgd(0.1),
                            loss_fn=torch.nn.functional.cross_entropy,
                            train=TrainConfig(epochs=1, batch_size=4), model_spec="t",
                            input_shape=(4,), num_classes=2)
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    not_applicable(experiment)
    after = (np.random.rand(), random.random(), float(torch.rand(())))
    np.random.seed(1)
    random.seed(1)
    torch.manual_seed(1)
    assert after == (np.random.rand(), random.random(), float(torch.rand(())))


def test_dead_relu_units_cutting_the_gradient_get_a_fix(tmp_path):
    # Biases of -10 kill every ReLU unit: no gradient reaches the hidden layers. The
    # finding names each dead activation and advises what revives them.
    from torch import nn

    import vgdiag

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    for k in (0, 2, 4):
        nn.init.constant_(model[k].bias, -10.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, out=tmp_path / "run", num_classes=10) as w:
        for _ in range(20):
            opt.zero_grad()
            x, y = torch.rand(32, 16), torch.randint(0, 10, (32,))
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    zero = next(f for f in w.findings() if f.id == "zero_gradient")
    assert zero.layers == ["0", "2", "4"]
    assert "activation after 0, 2, 4 is dead" in zero.evidence["cause"]
    assert {"weight-init", "batchnorm"} <= set(zero.recommend)
