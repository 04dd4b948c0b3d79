"""A layer that did not run at a sampled step is 'not measured' (NaN), not a zero gradient."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vgdiag.engine.diagnosis import diagnose
from vgdiag.engine.probe import Probe
from vgdiag.engine.records import StepRecord


class Branchy(nn.Module):
    """A branch taken on some steps, a layer whose gradient is exactly 0, one never run."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.branch = nn.Linear(8, 8)  # runs when `take` is set
        self.muted = nn.Linear(8, 8)  # runs every step; its output is multiplied by 0
        self.detached = nn.Linear(8, 8)  # runs every step; its output leaves the graph
        self.never = nn.Linear(8, 8)  # defined, never called
        self.head = nn.Linear(8, 3)
        self.take = True
        self.side: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x))
        if self.take:
            h = h + torch.tanh(self.branch(h))
        h = h + 0.0 * self.muted(h)
        self.side = self.detached(h).detach()
        return self.head(h)


def train(steps: int = 12) -> tuple[Branchy, Probe, list[bool]]:
    torch.manual_seed(0)
    model = Branchy()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = Probe(model, opt, every=1, hist_every=0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    taken = []
    for step in range(steps):
        model.take = step % 3 == 0
        taken.append(model.take)
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        probe.observe_loss(loss)
        loss.backward()
        expected = (torch.cat([model.branch.weight.grad.flatten(), model.branch.bias.grad])
                    .norm().item() if model.take else None)
        opt.step()
        if expected is not None:
            assert probe.history[-1].layers["branch"].grad_norm == (
                pytest.approx(expected, rel=1e-6))
    probe.close()
    return model, probe, taken


def test_a_branch_not_taken_is_nan_and_a_layer_that_ran_without_gradient_is_zero():
    _, probe, taken = train()
    records = list(probe.history)
    assert [r.step for r in records] == list(range(12))
    for r, take in zip(records, taken):
        branch = r.layers["branch"]
        if take:
            assert branch.grad_norm > 0 and branch.grad_mean_abs > 0
            assert set(branch.param_grad_norms) == {"weight", "bias"}
        else:
            assert math.isnan(branch.grad_norm) and math.isnan(branch.grad_mean_abs)
            assert branch.param_grad_norms == {}  # nothing of it was measured
            assert not branch.grad_non_finite
        # Its weights exist whether or not it ran: still measured.
        assert math.isfinite(branch.weight_norm) and branch.weight_norm > 0
        # Ran, with a gradient of exactly 0 / with no gradient at all: 0, not NaN.
        assert r.layers["muted"].grad_norm == 0.0
        assert r.layers["muted"].param_grad_norms == {"weight": 0.0, "bias": 0.0}
        assert r.layers["detached"].grad_norm == 0.0
        assert math.isnan(r.layers["never"].grad_norm)
        assert r.layers["never"].param_grad_norms == {}
        for name in ("stem", "head"):
            assert math.isfinite(r.layers[name].grad_norm) and r.layers[name].grad_norm > 0


def test_findings_on_a_branch_not_taken():
    _, probe, _ = train()
    records, layers = list(probe.history), probe.layers
    used = {i.name: i.used for i in layers}
    assert used["branch"] and used["muted"] and used["stem"] and used["head"]
    assert not used["never"] and not used["detached"]
    for recs in (records, [StepRecord.from_json(r.to_json()) for r in records]):
        found = {f.id: f for f in diagnose(recs, layers)}
        assert "non_finite" not in found  # "not run" is no blow-up
        assert set(found["unused_layers"].layers) == {"never", "detached"}
        # The layer that ran with a zero gradient every step is reported; the branch,
        # zero nowhere it ran, is not.
        assert found["zero_gradient"].layers == ["muted"]


def test_a_nan_gradient_in_a_layer_that_ran_is_still_non_finite():
    _, probe, taken = train(6)
    records = list(probe.history)
    bad = next(r for r, take in zip(records, taken) if take and r.step > 0)
    bad.layers["branch"].grad_norm = math.nan
    bad.layers["branch"].param_grad_norms["weight"] = math.nan
    found = {f.id: f for f in diagnose(records, probe.layers)}
    assert found["non_finite"].layers == ["branch"]
    assert found["non_finite"].evidence["first_step"] == bad.step


class Alternating(nn.Module):
    """A classifier whose middle layer runs on every other training forward only."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(784, 16)
        self.branch = nn.Linear(16, 16)
        self.head = nn.Linear(16, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.stem(x.flatten(1)))
        if self.training:
            self.calls += 1
            if self.calls % 2:
                h = torch.tanh(self.branch(h))
        return self.head(h)


def test_the_trainer_goes_on_through_a_branch_not_taken():
    import dataclasses

    from vgdiag.engine.events import RunFinished, StepSampled
    from vgdiag.engine.status import RunStatus
    from vgdiag.engine.trainer import run_training
    from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data

    options = RunOptions(data="synthetic", synthetic_size=200, epochs=2, batch_size=50, every=1)
    data = load_data(options)
    exp = dataclasses.replace(build_experiment(options, data), model_factory=Alternating)
    events = list(run_training(exp, data))
    end = events[-1]
    assert isinstance(end, RunFinished) and end.status == RunStatus.COMPLETED
    branch = [e.record.layers["branch"].grad_norm for e in events if isinstance(e, StepSampled)]
    assert len(branch) == end.steps_done >= 6  # every step sampled, every epoch run
    ran = [not math.isnan(g) for g in branch]
    assert ran[1:] == [not r for r in ran[:-1]]  # every other step
    assert all(g > 0 for g, r in zip(branch, ran) if r)
    assert not end.extra["stopped_on_non_finite"]
    assert "non_finite" not in {f.id for f in end.findings}
