"""Parameter statistics from flat buffers (probe_flat) against float64 references."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vgdiag
from vgdiag.engine.probe import Probe


class Wide(nn.Module):
    """A weight longer than one norm kernel's accurate length, a bias, a spare parameter."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.a = nn.Linear(700, 300).to(dtype)  # 210,000 elements: many rows of the buffers
        self.b = nn.Linear(300, 3).to(dtype)
        self.spare = nn.Parameter(torch.randn(5, dtype=dtype))  # never gets a gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def f64(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().double().reshape(-1) for t in tensors])


def check(model: nn.Module, dtype: torch.dtype, flat: bool) -> None:
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    w0 = {n: [p.detach().clone() for p in m.parameters(recurse=False)]
          for n, m in (("a", model.a), ("b", model.b))}
    probe = Probe(model, opt, every=1, hist_every=0)
    assert (probe._flat is not None) is flat
    for _ in range(3):
        x, y = torch.randn(32, 700, dtype=dtype), torch.randint(0, 3, (32,))
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        grads = {n: f64([p.grad for p in m.parameters(recurse=False) if p.grad is not None])
                 for n, m in (("a", model.a), ("b", model.b))}
        before = {n: f64(list(m.parameters(recurse=False)))
                  for n, m in (("a", model.a), ("b", model.b))}
        opt.step()
        record = probe.history[-1]
        for n, m in (("a", model.a), ("b", model.b)):
            s = record.layers[n]
            now = f64(list(m.parameters(recurse=False)))
            assert s.grad_norm == pytest.approx(float(grads[n].norm()), rel=1e-6)
            assert s.grad_mean_abs == pytest.approx(float(grads[n].abs().mean()), rel=1e-6)
            assert s.weight_norm == pytest.approx(float(now.norm()), rel=1e-6)
            assert s.update_ratio == pytest.approx(
                float((now - before[n]).norm() / now.norm()), rel=1e-5)
            start = f64(w0[n])
            assert s.weight_change == pytest.approx(
                float((now - start).norm() / start.norm()), rel=1e-5)
        assert record.layers["<root>"].grad_norm == 0.0  # ran, no gradient reached it
    probe.close()


def test_flat_buffers_match_float64():
    check(Wide(), torch.float32, flat=True)


def test_float64_models_use_the_flat_buffers_too():
    check(Wide(torch.float64), torch.float64, flat=True)


def test_an_empty_parameter_between_others_leaves_their_rows_in_place():
    model = Wide()
    model.a.register_parameter("nothing", nn.Parameter(torch.empty(0, 3)))  # has no rows
    check(model, torch.float32, flat=True)


def test_mixed_dtypes_take_the_per_tensor_path():
    model = Wide()
    model.spare.data = model.spare.data.double()
    check(model, torch.float32, flat=False)


def test_a_sparse_gradient_falls_back_for_that_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 4, sparse=True), nn.Flatten(), nn.Linear(12, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Probe(model, opt, every=1) as probe:
        assert probe._flat is not None
        model(torch.randint(0, 50, (6, 3))).sum().backward()
        dense = model[0].weight.grad.to_dense().double()
        opt.step()
    s = probe.history[0].layers["0"]
    assert s.grad_norm == pytest.approx(float(dense.norm()), rel=1e-6)
    assert s.update_ratio > 0


def test_a_finite_weight_too_large_for_float32_squares_gets_its_float64_norm():
    # Elements of 1e19 square past float32's range: the row sums overflow to inf,
    # the norm itself (6.6e20) is finite. A diverging run reaches such weights.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 1100), nn.ReLU(), nn.Linear(1100, 2))
    with torch.no_grad():
        model[0].weight.fill_(1e19)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with vgdiag.watch(model, opt, every=1) as w:
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        stats = w.history[-1].layers["0"]
    with torch.no_grad():
        params = torch.cat([model[0].weight.double().flatten(), model[0].bias.double()])
        expected = float(torch.linalg.vector_norm(params))
    assert math.isfinite(stats.weight_norm)
    assert stats.weight_norm == pytest.approx(expected, rel=1e-9)
