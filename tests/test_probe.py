"""The probe's numbers against an independent computation, and its side effects."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import vgdiag
from vgdiag.engine.history import History
from vgdiag.engine.probe import SATURATION_EPS, Probe
from vgdiag.engine.records import StepRecord


def make_mlp(seed: int = 0, act: type[nn.Module] = nn.Sigmoid) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), act(), nn.Linear(8, 6), act(),
                         nn.Linear(6, 3))


def batch(seed: int = 1, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 3, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def train_steps(model: nn.Module, steps: int, probe_every: int | None, lr: float = 0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    probe = Probe(model, opt, every=probe_every, hist_every=1) if probe_every else None
    outputs, grads = [], []
    for i in range(steps):
        x, y = batch(seed=i)
        opt.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        if probe:
            probe.observe_loss(loss)
        loss.backward()
        outputs.append(out.detach().clone())
        grads.append([p.grad.clone() for p in model.parameters()])
        opt.step()
    if probe:
        probe.close()
    return outputs, grads, probe


def test_stats_match_an_independent_computation():
    model = make_mlp()
    reference = copy.deepcopy(model)
    x, y = batch()

    # Independent computation, no probe: gradients, layer outputs' gradients, update.
    outs: dict[str, torch.Tensor] = {}
    h = x.flatten(1)
    for name in ("1", "2", "3", "4", "5"):
        h = reference.get_submodule(name)(h)
        h.retain_grad()
        outs[name] = h
    loss_ref = nn.functional.cross_entropy(h, y)
    loss_ref.backward()
    w_before = {n: p.detach().clone() for n, p in reference.named_parameters()}
    torch.optim.SGD(reference.parameters(), lr=0.5).step()

    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with Probe(model, opt, every=1) as probe:
        loss = nn.functional.cross_entropy(model(x), y)
        probe.observe_loss(loss)
        loss.backward()
        opt.step()
    record = probe.history[0]
    assert [i.name for i in probe.layers] == ["1", "3", "5"]
    assert record.loss == pytest.approx(loss_ref.item())
    for name in ("1", "3", "5"):
        layer = reference.get_submodule(name)
        g = torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()])
        s = record.layers[name]
        assert s.grad_norm == pytest.approx(g.norm().item(), rel=1e-6)
        assert s.grad_mean_abs == pytest.approx(g.abs().mean().item(), rel=1e-6)
        assert s.param_grad_norms["weight"] == pytest.approx(layer.weight.grad.norm().item())
        w_now = torch.cat([layer.weight.flatten(), layer.bias.flatten()]).detach()
        w_old = torch.cat([w_before[f"{name}.weight"].flatten(),
                           w_before[f"{name}.bias"].flatten()])
        assert s.weight_norm == pytest.approx(w_now.norm().item(), rel=1e-6)
        assert s.update_ratio == pytest.approx(((w_now - w_old).norm() / w_now.norm()).item(),
                                               rel=1e-5)
        # Measured right after the first update: W0 is the initial weights.
        assert s.weight_change == pytest.approx(((w_now - w_old).norm() / w_old.norm()).item(),
                                                rel=1e-5)
        assert s.grad_output_norm == pytest.approx(outs[name].grad.norm().item(), rel=1e-6)
    for lin, act in (("1", "2"), ("3", "4")):
        a = outs[act].detach()
        s = record.layers[lin]
        assert s.act_mean == pytest.approx(a.mean().item(), rel=1e-5)
        assert s.act_std == pytest.approx(a.std().item(), rel=1e-5)
        sat = ((a < SATURATION_EPS) | (a > 1 - SATURATION_EPS)).float().mean().item()
        assert s.act_saturated == pytest.approx(sat)
        assert math.isnan(s.act_dead)  # sigmoid has no dead units
    assert math.isnan(record.layers["5"].act_mean)  # no activation after the output layer


def test_outputs_and_gradients_are_bit_identical_with_the_probe():
    plain_out, plain_grads, _ = train_steps(make_mlp(), 7, None)
    probed_out, probed_grads, probe = train_steps(make_mlp(), 7, 2)
    assert probe is not None and [r.step for r in probe.history] == [0, 2, 4, 6]
    for a, b in zip(plain_out, probed_out):
        assert torch.equal(a, b)
    for ga, gb in zip(plain_grads, probed_grads):
        assert all(torch.equal(x, y) for x, y in zip(ga, gb))


def test_close_removes_every_hook():
    model = make_mlp(act=nn.ReLU)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt, every=1)
    assert any(m._forward_hooks for m in model.modules())
    probe.close()
    assert not any(m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_unsampled_steps_hold_no_forward_hooks():
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, opt, every=3)
    seen = []
    for i in range(6):
        seen.append(any(m._forward_hooks for m in model.modules()))
        x, y = batch(i)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    probe.close()
    assert seen == [True, False, False, True, False, False]


class Reversed(nn.Module):
    """Defined output-first, executed input-first: depth follows execution."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.body = nn.Linear(4, 4)
        self.stem = nn.Linear(3, 4)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)))))


def test_layers_are_ordered_by_first_execution():
    model = Reversed()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(5, 3)
    with torch.no_grad():
        after_stem = torch.relu(model.stem(x)).double()
    with Probe(model, opt, every=1) as probe:
        model(x).sum().backward()
        opt.step()
    names = [i.name for i in probe.layers]
    assert names == ["stem", "body", "head", "unused"]
    record = probe.history[0]
    # trainable but did not run this step: not measured
    assert math.isnan(record.layers["unused"].grad_norm)
    assert record.layers["unused"].param_grad_norms == {}
    # torch.relu called in forward is the stem's activation (probe_functional)
    assert [i.activation for i in probe.layers] == ["relu()", "relu()", None, None]
    assert record.layers["stem"].act_mean == pytest.approx(float(after_stem.mean()), rel=1e-6)
    dead = float((after_stem == 0).all(dim=0).double().mean())
    assert record.layers["stem"].act_dead == pytest.approx(dead)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.parts = nn.ModuleDict({"a": self.block, "out": nn.Linear(4, 2)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.parts["out"](torch.tanh(self.block(torch.tanh(self.block(x)))))


def test_a_module_used_twice_is_one_layer_with_both_gradients():
    model = Shared()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 4)
    with Probe(model, opt, every=1) as probe:
        model(x).sum().backward()
        expected = torch.cat([model.block.weight.grad.flatten(), model.block.bias.grad]).norm()
        opt.step()
    assert [i.name for i in probe.layers] == ["block", "parts.out"]
    assert probe.history[0].layers["block"].grad_norm == pytest.approx(expected.item())


def test_inplace_relu_and_frozen_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True), nn.Linear(8, 8),
                          nn.ReLU(inplace=True), nn.Linear(8, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.randn(6, 4)
    with Probe(model, opt, every=1) as probe:
        out = model(x)
        out.sum().backward()
        opt.step()
    record = probe.history[0]
    frozen = probe.layers[0]
    assert not frozen.trainable and math.isnan(record.layers["0"].grad_norm)
    assert record.layers["2"].grad_norm > 0
    assert math.isfinite(record.layers["2"].grad_output_norm)
    assert 0.0 <= record.layers["2"].act_dead <= 1.0


def test_histograms_count_every_weight():
    _, _, probe = train_steps(make_mlp(), 1, 1)
    assert probe is not None
    record = probe.history[0]
    assert record.weight_hist["1"].counts.sum() == 12 * 8
    assert record.grad_hist["1"].counts.sum() == 12 * 8 + 8


def test_model_without_parameters_is_refused():
    with pytest.raises(ValueError, match="no parameters"):
        Probe(nn.Sequential(nn.ReLU()), None)


def test_watch_api_records_and_diagnoses():
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(6):
        layers += [nn.Linear(12 if not layers[1:] else 32, 32), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with vgdiag.watch(model, opt, every=1) as w:
        for i in range(3):
            x, y = batch(i)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert [r.step for r in w.history] == [0, 1, 2]
    assert w.history[2].layers["1"].grad_norm > 0
    ids = {f.id for f in w.findings()}
    assert "vanishing_gradient" in ids
    assert not any(m._forward_hooks for m in model.modules())


def test_history_stays_bounded_and_keeps_the_first_record():
    history = History(max_records=8)
    for step in range(1000):
        history.append(StepRecord(step=step, epoch=0, loss=0.0, layers={}))
    assert len(history) <= 8
    assert history.first is not None and history.first.step == 0
    steps = [r.step for r in history]
    # Evenly decimated: one record per `stride` steps, the newest within one stride.
    assert set(np.diff(steps[1:])) == {history.stride}
    assert steps[-1] > 1000 - history.stride - 1


def test_undrained_records_stay_bounded_in_a_users_own_loop():
    # vgdiag.watch users never call drain(): the queue must not grow with the run.
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = batch()
    with Probe(model, opt, every=1, hist_every=0, max_records=8) as probe:
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert len(probe.history) <= 8
    assert len(probe.drain()) <= 8


def test_norms_of_long_tensors_are_accurate_in_float32():
    # torch's float32 CPU norm drifts with length (8e-5 at 4M elements); the probe's
    # chunked norm stays within 1e-6 of float64.
    from vgdiag.engine.probe_kernels import foreach_norm, l1_norms

    t = torch.randn(4_000_003, generator=torch.Generator().manual_seed(0))
    small = torch.randn(100)
    l2, l2_small = foreach_norm([t, small])
    assert l2.item() == pytest.approx(t.double().norm().item(), rel=1e-6)
    assert l2_small.item() == pytest.approx(small.double().norm().item(), rel=1e-6)
    assert foreach_norm([t], 1.0)[0].item() == pytest.approx(t.double().abs().sum().item(),
                                                             rel=1e-6)
    assert l1_norms([t])[0].item() == pytest.approx(t.double().abs().sum().item(), rel=1e-6)


def test_a_failing_probe_drops_the_sample_and_training_goes_on(monkeypatch):
    import vgdiag.engine.probe as probe_module

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    model = make_mlp()
    reference = copy.deepcopy(model)
    outputs, _, _ = train_steps(reference, 3, None)
    monkeypatch.setattr(probe_module, "assemble", broken)
    with pytest.warns(UserWarning, match="could not measure step 0"):
        probed, _, probe = train_steps(model, 3, 1)
    assert probe is not None and len(probe.history) == 0 and probe.step == 3
    assert all(torch.equal(a, b) for a, b in zip(outputs, probed))


def test_short_runs_sample_enough_steps_at_the_default_rate():
    from vgdiag.engine.experiment import DEFAULT_EVERY, MIN_SAMPLED_STEPS, sampling_every

    assert sampling_every(DEFAULT_EVERY, 16) == 1  # every step of a short run
    assert sampling_every(DEFAULT_EVERY, 500) == 500 // MIN_SAMPLED_STEPS
    assert sampling_every(DEFAULT_EVERY, 100_000) == DEFAULT_EVERY
    assert sampling_every(7, 16) == 7  # the user's own choice is kept


def test_a_private_torch_subclass_is_shown_as_the_public_layer_it_extends():
    from vgdiag.engine.probe_layers import kind_name

    attention = nn.MultiheadAttention(8, 2)  # its out_proj is NonDynamicallyQuantizableLinear
    assert type(attention.out_proj).__name__ != "Linear"
    assert kind_name(attention.out_proj) == "Linear"
    assert kind_name(attention) == "MultiheadAttention"

    class Mine(nn.Linear):
        pass

    assert kind_name(Mine(2, 2)) == "Mine"  # a user's own class keeps its name
