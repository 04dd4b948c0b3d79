"""The model families people bring: layer order, output layer, verdict, exact numbers.

Every model is built from torch.nn alone (tests/zoo_models.py) and trained for real;
numbers are checked against float64 computations made here without the probe.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import zoo_models as zoo
from torch import nn

import vgdiag
from vgdiag.engine import gradflow
from vgdiag.engine.diagnosis import diagnose, verdict
from vgdiag.engine.records import LayerInfo


def batch(kind: str, seed: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "img":
        return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)
    if kind == "seq":
        return torch.randn(n, 20, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    if kind == "long":
        return torch.randn(n, 60, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    if kind == "tok":
        x = torch.randint(0, 40, (n, 12), generator=g)
        return x, torch.roll(x, -1, 1)
    return torch.randn(n, 10, generator=g), torch.randint(0, 3, (n,), generator=g)


def loss_of(out: torch.Tensor | dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    if isinstance(out, dict):
        out = out["out"]
    return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def train(model: nn.Module, kind: str, steps: int, *, sgd: float = 0.0, every: int = 1):
    """Train with the probe; returns the watch and the float64 layer norms of the last step."""
    torch.manual_seed(0)
    opt = (torch.optim.SGD(model.parameters(), lr=sgd) if sgd
           else torch.optim.Adam(model.parameters(), lr=1e-3))
    w = vgdiag.watch(model, opt, every=every, hist_every=5)
    last: dict[str, float] = {}
    for step in range(steps):
        x, y = batch(kind, step % 4)
        opt.zero_grad()
        loss = loss_of(model(x), y)
        w.observe_loss(loss)
        loss.backward()
        last = float64_norms(model, w.layers) if w.layers else {}
        opt.step()
    w.close()
    return w, last


def float64_norms(model: nn.Module, layers: list[LayerInfo]) -> dict[str, float]:
    """Each layer's gradient norm, in float64, from its own parameters' .grad."""
    out = {}
    for info in layers:
        name, _, group = info.name.partition(".l") if info.role == "recurrent" else (
            info.name, "", "")
        module = model if name == "<root>" else model.get_submodule(name)
        total = 0.0
        for pname in info.param_names:
            g = getattr(module, pname).grad
            if g is not None:
                g = g.coalesce().values() if g.is_sparse else g
                total += float(g.double().square().sum())
        out[info.name] = math.sqrt(total)
    return out


def check_norms(w, expected: dict[str, float]) -> None:
    got = w.history[-1].layers
    for name, value in expected.items():
        assert got[name].grad_norm == pytest.approx(value, rel=1e-6, abs=1e-30), name


def names(w) -> list[str]:
    return [i.name for i in w.layers]


def severe(findings) -> dict[str, list[str]]:
    """Warnings and errors only: id -> layers."""
    return {f.id: f.layers for f in findings if f.severity in ("warning", "error")}


def test_vit_order_output_layer_and_zero_head():
    w, expected = train(zoo.ViT(), "img", 25)
    order = names(w)
    # The patch embedding runs first; the class token (on the root) is concatenated
    # after it; the position embedding (on the encoder) is added after that.
    assert order[:3] == ["patch_embed", "<root>", "encoder"]
    # out_proj is used functionally by its attention: it still sits right after it.
    for k in (0, 1):
        attn = order.index(f"encoder.layers.{k}.self_attn")
        assert order[attn + 1] == f"encoder.layers.{k}.self_attn.out_proj"
    assert order[-2:] == ["encoder.norm", "head"]
    assert gradflow.output_layer(w.history[-1], w.layers) == "head"
    # Step 0: the zero-initialised head passes nothing back; that is a finding.
    init = diagnose(w.history.records()[:1], w.layers)
    zero = next(f for f in init if f.id == "zero_gradient")
    assert zero.severity == "error" and "patch_embed" in zero.layers and "head" not in zero.layers
    assert "output layer head is all zeros" in zero.evidence["cause"]
    assert verdict(init) != "healthy"
    assert not severe(w.findings())  # once the head has learned, gradients flow
    check_norms(w, expected)


def test_gpt_tied_embedding_attention_and_layernorm():
    model = zoo.GPT()
    reference = copy.deepcopy(model)
    w, expected = train(model, "tok", 20)
    order = names(w)
    # The head applies the token embedding's weight after every other layer: that
    # layer is the output layer, last in depth, and says what it is tied to.
    assert order[0] == "wpe" and "lm_head" not in order
    assert order[1:7] == ["blocks.0.ln1", "blocks.0.attn", "blocks.0.attn.out_proj",
                          "blocks.0.ln2", "blocks.0.mlp.0", "blocks.0.mlp.2"]
    assert order[-2:] == ["ln_f", "wte"]
    assert gradflow.output_layer(w.history[-1], w.layers) == "wte"
    tied = {i.name: i.tied for i in w.layers if i.tied}
    assert tied == {"wte": ("lm_head",)} and w.layers[-1].kind_label == "Embedding, tied to lm_head"
    assert not w.layers[-1].normalized_after  # it acts after ln_f
    # std-0.02 init under LayerNorm is standard, not concentrated weights.
    assert not severe(w.findings())
    blocks = gradflow.block_summary(w.history[0], w.history[-1], w.layers)
    assert [r["name"] for r in blocks["rows"]][1:4] == ["blocks.0", "blocks.1", "blocks.2"]
    check_norms(w, expected)
    # The probe left the training bit-identical.
    torch.manual_seed(0)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for step in range(20):
        x, y = batch("tok", step % 4)
        opt.zero_grad()
        loss_of(reference(x), y).backward()
        opt.step()
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_a_weight_shared_inside_the_model_is_not_taken_for_a_tied_head():
    # Two layers sharing one weight in the middle (a tied block) act before the head:
    # the output layer stays the head, the shared layer keeps its place.
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8)
            self.b = nn.Linear(8, 8, bias=False)
            self.b.weight = self.a.weight
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.b(torch.tanh(self.a(x)))))

    torch.manual_seed(0)
    model = Shared()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = vgdiag.watch(model, opt, every=1, num_classes=3)
    for _ in range(2):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 3, (16,)))
        loss.backward()
        opt.step()
    w.close()
    assert names(w)[-1] == "head" == gradflow.output_layer(w.history[-1], w.layers)
    assert {i.name: i.tied for i in w.layers if i.tied} == {"a": ("b",)}


def test_a_norm_after_the_last_weight_layer_is_not_the_output_layer():
    # Logits through a BatchNorm1d: the ratios read against the head's weight matrix,
    # not against the norm's gain vector (a gradient of another scale).
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    w = vgdiag.watch(model, opt, every=1, num_classes=4)
    for _ in range(2):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(16, 8)), torch.randint(0, 4, (16,))
                                    ).backward()
        opt.step()
    w.close()
    assert names(w)[-1] == "3"
    assert gradflow.output_layer(w.history[-1], w.layers) == "2"
    ratios = gradflow.grad_ratios(w.history[-1], w.layers)
    assert ratios["2"] == 1.0
    assert ratios["0"] == pytest.approx(w.history[-1].layers["0"].grad_norm
                                        / w.history[-1].layers["2"].grad_norm)


class TiedLM(nn.Module):
    """A head tied to the embedding, its one hidden layer checkpointed (reentrant, as
    Hugging Face's gradient checkpointing is by default) when asked."""

    def __init__(self, reentrant: bool, bias: bool = False) -> None:
        super().__init__()
        self.reentrant = reentrant
        self.wte = nn.Embedding(20, 8)
        self.h = nn.Linear(8, 8)
        self.ln_f = nn.LayerNorm(8)
        self.lm_head = nn.Linear(8, 20, bias=bias)
        self.lm_head.weight = self.wte.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.utils.checkpoint import checkpoint

        h = self.wte(x)
        h = checkpoint(self.h, h, use_reentrant=True) if self.reentrant else self.h(h)
        return self.lm_head(self.ln_f(torch.tanh(h)))


class SharedInContainer(nn.Module):
    """A container keeps the embedding's weight and applies it first, then its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.dec = nn.Module()
        self.dec.weight = self.emb.weight
        self.dec.h = nn.Linear(8, 8)
        self.dec.head = nn.Linear(8, 3)
        self.dec.forward = lambda x: self.dec.head(torch.tanh(self.dec.h(
            nn.functional.embedding(x, self.dec.weight))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(x).mean(1)


@pytest.mark.parametrize(("model", "output"), [
    (lambda: TiedLM(reentrant=False), "wte"),
    (lambda: TiedLM(reentrant=True), "wte"),  # the recomputed forward runs h after the head
    # A head with a bias of its own is a layer too (PyTorch's word_language_model).
    (lambda: TiedLM(reentrant=False, bias=True), "wte"),
    (SharedInContainer, "dec.head"),  # the container's forward ends after its head's
])
def test_the_tied_head_is_read_where_the_forward_ends(model, output):
    torch.manual_seed(0)
    m = model()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    w = vgdiag.watch(m, opt, every=1)
    for _ in range(2):
        x = torch.randint(0, 20, (4, 5))
        opt.zero_grad()
        out = m(x)
        loss = nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]),
                                           torch.randint(0, out.shape[-1], (out.numel()
                                                                            // out.shape[-1],)))
        loss.backward()
        opt.step()
    w.close()
    assert names(w)[-1] == output == gradflow.output_layer(w.history[-1], w.layers)


def test_sparse_embedding_is_measured_and_training_goes_on():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the probe must not even warn
        w, expected = train(zoo.GPT(sparse=True), "tok", 6, sgd=0.1)
    assert len(w.history) == 6 and names(w)[0] == "wte" and names(w)[-1] == "lm_head"
    assert w.history[-1].layers["wte"].grad_norm > 0
    check_norms(w, expected)


def test_resnet_batchnorm_inplace_relu():
    w, expected = train(zoo.ResNet(), "img", 20)
    order = names(w)
    assert order[:2] == ["conv1", "bn1"] and order[-1] == "fc"
    assert order.index("layer1.1.conv1") < order.index("layer2.0.conv1")
    assert gradflow.output_layer(w.history[-1], w.layers) == "fc"
    blocks = gradflow.block_summary(w.history[0], w.history[-1], w.layers)
    assert [r["name"] for r in blocks["rows"]] == [
        "conv1", "bn1", "layer1.0", "layer1.1", "layer2.0", "layer2.1", "fc"]
    assert all(r["grad_norm"] > 0 for r in blocks["rows"])
    assert not severe(w.findings())
    check_norms(w, expected)


def test_dead_units_are_channels_after_a_convolution():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8)
    with torch.no_grad():
        bn.bias[:2] = -50.0  # two channels of eight: dead at every position
    model = nn.Sequential(nn.Conv2d(3, 8, 3), bn, nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 14 * 14, 5))
    w, _ = train(model, "img", 2)
    assert w.history[0].layers["1"].act_dead == pytest.approx(2 / 8)
    assert w.layers[1].activation == "2"


def test_mobilenet_depthwise_and_hardswish():
    w, _ = train(zoo.MobileNet(), "img", 20)
    info = {i.name: i for i in w.layers}
    assert names(w)[0] == "features.0.0" and names(w)[-1] == "classifier.2"
    assert info["features.1.block.3"].fan_in == 9  # depthwise: one channel x 3 x 3
    s = w.history[-1].layers["features.1.block.1"]  # BatchNorm, then Hardswish
    assert info["features.1.block.1"].activation == "features.1.block.2"
    assert math.isfinite(s.act_mean) and math.isnan(s.act_dead)  # Hardswish: no dead units
    blocks = gradflow.block_summary(w.history[0], w.history[-1], w.layers)
    assert [r["name"] for r in blocks["rows"]][:5] == [f"features.{k}" for k in range(5)]
    assert not severe(w.findings())


def test_stacked_bidirectional_lstm_rows_and_time_profile():
    model = zoo.lstm()
    reference = copy.deepcopy(model)
    w, expected = train(model, "seq", 12)
    assert names(w) == ["rnn.l0", "rnn.l0_reverse", "rnn.l1", "rnn.l1_reverse", "head"]
    assert w.layers[0].role == "recurrent" and w.layers[0].param_names[0] == "weight_ih_l0"
    check_norms(w, expected)
    # The time profile against dLoss/dx_t computed here, without the probe, on the
    # weights of the last sampled step (before its update).
    independent = torch.zeros(0)
    torch.manual_seed(0)
    opt = torch.optim.Adam(reference.parameters(), lr=1e-3)
    for step in range(12):
        xb, yb = batch("seq", step % 4)
        opt.zero_grad()
        if step == 11:
            xb = xb.clone().requires_grad_(True)
        loss_of(reference(xb), yb).backward()
        if step == 11:
            independent = xb.grad.double().norm(dim=(0, 2))
        opt.step()
    assert w.history[-1].time_grad["rnn"] == pytest.approx(independent.tolist(), rel=1e-5)
    # Making the data input require grad on sampled steps changed no parameter.
    for a, b in zip(reference.parameters(), model.parameters()):
        assert torch.equal(a, b)
    assert not severe(w.findings())


def test_gru_rows():
    w, expected = train(zoo.gru(), "seq", 10)
    assert names(w) == ["rnn.l0", "rnn.l1", "head"]
    assert len(w.history[-1].time_grad["rnn"]) == 20
    check_norms(w, expected)
    assert not severe(w.findings())


def test_deep_vanilla_rnn_vanishes_through_time():
    w, _ = train(zoo.deep_rnn(), "long", 8, sgd=0.01)
    assert names(w) == ["rnn.l0", "rnn.l1", "rnn.l2", "head"]
    found = {f.id: f for f in w.findings()}
    through = found["vanishing_through_time"]
    assert through.severity == "error" and through.layers == ["rnn"]
    assert through.evidence["time_steps"]["rnn"] == 60
    assert through.evidence["decay_per_step"]["rnn"] < 0.9
    profile = w.history[-1].time_grad["rnn"]
    assert profile[-1] > 1e3 * max(profile[0], 1e-300)
    assert "vanishing_gradient" not in found  # across layers it is fine


def test_a_recurrent_explosion_is_named_through_time_and_from_initialisation():
    w, _ = train(zoo.exploding_rnn(), "long", 30, sgd=0.5)
    found = {f.id: f for f in w.findings()}
    through = found["exploding_through_time"]
    profile = w.history[0].time_grad["rnn"]
    assert through.layers == ["rnn"] and through.recommend == ["weight-init"]
    ratio = through.evidence["ratio_first_last_step"]["rnn"]
    assert ratio > 1e2 and ratio == pytest.approx(profile[0] / profile[-1], rel=1e-6)
    assert "explodes through time" in through.message
    assert "vanishing_through_time" not in found


def test_lazy_modules_are_measured_from_their_first_forward():
    w, expected = train(zoo.lazy(), "img", 4)
    assert names(w) == ["0", "3", "5"]
    assert w.layers[0].fan_in == 3 * 3 * 3 and w.layers[1].fan_in == 6 * 14 * 14
    assert [r.step for r in w.history] == [0, 1, 2, 3]
    check_norms(w, expected)


def test_unused_head_is_reported_never_blamed():
    w, _ = train(zoo.TwoHeads(), "vec", 10)
    info = {i.name: i for i in w.layers}
    assert not info["aux"].used and info["head"].used
    assert gradflow.output_layer(w.history[-1], w.layers) == "head"
    assert math.isnan(gradflow.grad_ratios(w.history[-1], w.layers)["aux"])
    findings = w.findings()
    unused = next(f for f in findings if f.id == "unused_layers")
    assert unused.severity == "info" and unused.layers == ["aux"]
    assert not any("aux" in f.layers for f in findings if f.id != "unused_layers")
    assert verdict(findings) == "healthy"


@pytest.mark.parametrize("act", [nn.ELU, nn.GELU, nn.SiLU, nn.LeakyReLU])
def test_negative_smooth_activations_have_no_dead_units(act):
    w, _ = train(zoo.negative(act), "vec", 3)
    assert all(math.isnan(s.act_dead) for s in w.history[-1].layers.values())
    assert math.isfinite(w.history[-1].layers["0"].act_mean)
    assert "dead_units" not in {f.id for f in w.findings()}


def test_dead_relus_give_zero_gradient_with_the_cause():
    w, _ = train(zoo.negative(nn.ReLU, bias=-100.0), "vec", 3)
    g = {n: s.grad_norm for n, s in w.history[-1].layers.items()}
    assert g["0"] == g["2"] == g["4"] == g["6"] == 0.0 and g["8"] > 0
    found = {f.id: f for f in w.findings()}
    zero = found["zero_gradient"]
    assert zero.layers == ["0", "2", "4", "6"] and "dead" in zero.evidence["cause"]
    # A ratio of exactly 0 is what zero_gradient already says, with its cause: the
    # vanishing finding (and its advice to switch to ReLU, on a ReLU net) is not repeated.
    assert "vanishing_gradient" not in found


def test_nan_in_activations_is_non_finite_not_a_crash():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(),
                          nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=1) as w:
        for step in range(3):
            x, y = batch("vec", step)
            if step == 1:
                x[0, 0] = math.nan
            opt.zero_grad()
            loss_of(model(x), y).backward()
            opt.step()
    assert len(w.history) == 3
    found = {f.id: f for f in w.findings()}
    assert found["non_finite"].evidence["first_step"] == 1
    assert verdict(w.findings()) != "healthy"


def test_a_layer_that_does_not_run_at_a_step_is_not_non_finite():
    # A branch taken on some steps only records no activation statistics on the others:
    # that is "not measured", not a divergence.
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk, self.side = nn.Linear(10, 8), nn.Linear(8, 8)
            self.act, self.head = nn.Sigmoid(), nn.Linear(8, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            h = self.trunk(x)
            if self.calls % 2:
                h = self.act(self.side(h))
            return self.head(h)

    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=1) as w:
        for step in range(6):
            x, y = batch("vec", step)
            opt.zero_grad()
            loss_of(model(x), y).backward()
            opt.step()
    assert math.isnan(w.history[1].layers["side"].act_mean)  # the branch did not run
    assert "non_finite" not in {f.id for f in w.findings()}
