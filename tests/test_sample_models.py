"""Every sample model, driven through the CLI: diagnosed, sensibly, without disturbance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vgdiag.cli.app import main
from vgdiag.engine.outputs import select_output
from vgdiag.engine.probe import Probe
from vgdiag.inputs.datasets import load_digits
from vgdiag.inputs.loading import load_model_factory

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = [
    ("deep_sigmoid_cnn.py:DeepSigmoidCNN", []),
    ("tanh_rnn.py:RowRNN", []),
    ("residual_net.py:ResidualNet", []),
    ("shared_weights.py:SharedWeights", []),
    ("factory.py:make_mlp", ["--model-arg", "depth=4", "--model-arg", "width=32"]),
    ("tiny_transformer.py:TinyTransformer", []),
    ("row_lstm.py:RowLSTM", []),
    ("frozen_backbone.py:FrozenBackbone", []),
    ("dict_output.py:DictOutput", ["--output-key", "logits"]),
]


def spec(name: str) -> str:
    return str(ROOT / "sample_models" / name)


def inspect_json(capsys, name: str, extra: list[str]) -> dict:
    code = main(["inspect", "--model", spec(name), *extra, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("name, extra", SAMPLES, ids=[s[0].split(":")[1] for s in SAMPLES])
def test_run_and_inspect_each_sample(capsys, tmp_path, name, extra):
    result = inspect_json(capsys, name, extra)
    assert result["layers"] and all(layer["grad_norm"] is not None or not layer["trainable"]
                                    for layer in result["layers"])
    out = tmp_path / "run"
    code = main(["run", "--model", spec(name), *extra, "--epochs", "1", "--every", "5",
                 "--headless", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"]
    assert all(layer["grad_norm_first"] is not None
               for layer in summary["layers"] if layer["trainable"])


def test_findings_make_sense_for_the_samples(capsys):
    cnn = {f["id"]: f for f in inspect_json(capsys, "deep_sigmoid_cnn.py:DeepSigmoidCNN",
                                             [])["findings"]}
    assert cnn["vanishing_gradient"]["severity"] == "error"
    residual = inspect_json(capsys, "residual_net.py:ResidualNet", [])
    assert "vanishing_gradient" not in {f["id"] for f in residual["findings"]}
    shared = inspect_json(capsys, "shared_weights.py:SharedWeights", [])
    names = [layer["name"] for layer in shared["layers"]]
    assert len(names) == len(set(names))  # a module used twice is one layer
    frozen = inspect_json(capsys, "frozen_backbone.py:FrozenBackbone", [])
    assert any(not layer["trainable"] for layer in frozen["layers"])


@pytest.mark.parametrize("name, extra", SAMPLES, ids=[s[0].split(":")[1] for s in SAMPLES])
def test_outputs_are_bit_identical_with_and_without_the_probe(name, extra):
    args = [extra[i + 1] for i, a in enumerate(extra) if a == "--model-arg"]
    key = extra[extra.index("--output-key") + 1] if "--output-key" in extra else None
    factory, _ = load_model_factory(spec(name), model_args=args)
    data = load_digits(0)
    batches = list(data.train.batches(16, torch.Generator().manual_seed(0)))[:4]

    def train(with_probe: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = factory()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.05)
        probe = Probe(model, opt, every=2) if with_probe else None
        outs = []
        for x, y in batches:
            opt.zero_grad()
            out = select_output(model(x), key) if key else model(x)
            torch.nn.functional.cross_entropy(out, y).backward()
            outs.append(out.detach().clone())
            outs += [p.grad.clone() for p in params if p.grad is not None]
            opt.step()
        if probe:
            probe.close()
        return outs

    plain, probed = train(False), train(True)
    assert len(plain) == len(probed)
    assert all(torch.equal(a, b) for a, b in zip(plain, probed))
