"""vgdiag.watch on optimizer.step(closure): each record is its step's, from step 0.

The closure runs zero_grad, forward and backward inside step(), after the optimizer's
pre-step hook; LBFGS evaluates it several times per step. Every record must hold the
gradients, forward statistics and loss of the closure's first evaluation (the step's
starting weights, computed here independently on a copy of the model before each
step) and the update across the whole step, and training must be bit-identical to
the same loop without vgdiag.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

import vgdiag
from vgdiag.engine.defaults import DEFAULT_EVERY

LAYERS = ("0", "2", "4")  # the Linear layers of mlp()
ACTS = {"0": "1", "2": "3"}  # layer -> the activation module that follows it


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 12), nn.Sigmoid(),
                         nn.Linear(12, 4))


def batch(step: int, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(n, 10, generator=g), torch.randint(0, 4, (n,), generator=g)


@dataclass
class Expected:
    """One step's numbers at its starting weights, computed on a copy of the model."""

    loss: float
    grad: dict[str, float]
    grad_output: dict[str, float]
    act_mean: dict[str, float]
    act_std: dict[str, float]
    update: dict[str, float] = field(default_factory=dict)  # filled after the step


def layer_vector(model: nn.Sequential, name: str, grad: bool = False) -> torch.Tensor:
    layer = model.get_submodule(name)
    parts = [p.grad if grad else p.detach() for p in layer.parameters()]
    return torch.cat([t.flatten() for t in parts]).clone()


def expected_at(model: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> Expected:
    """Forward and backward on a copy: what a plain `backward(); step()` loop measures."""
    ref = copy.deepcopy(model)
    outs: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}
    h = x
    for name, module in ref.named_children():
        h = module(h)
        if name in LAYERS:
            h.retain_grad()
            outs[name] = h
        else:
            acts[name] = h.detach()
    loss = nn.functional.cross_entropy(h, y)
    loss.backward()
    return Expected(
        loss=loss.item(),
        grad={n: layer_vector(ref, n, grad=True).norm().item() for n in LAYERS},
        grad_output={n: outs[n].grad.norm().item() for n in LAYERS},
        act_mean={n: acts[a].mean().item() for n, a in ACTS.items()},
        act_std={n: acts[a].std().item() for n, a in ACTS.items()},
    )


def updates(model: nn.Sequential, before: dict[str, torch.Tensor]) -> dict[str, float]:
    """||W_after - W_before|| / ||W_after|| per layer."""
    out = {}
    for n in LAYERS:
        after = layer_vector(model, n)
        out[n] = ((after - before[n]).norm() / after.norm()).item()
    return out


Closure = Callable[[], torch.Tensor]


def train(model: nn.Sequential, opt: torch.optim.Optimizer, steps: int,
          w: vgdiag.Watch | None, *, observe: bool = True, keyword: bool = False,
          expect_every: int = 1) -> tuple[list[Expected], list[int], list[bool]]:
    """The user's closure loop; with `w`, also what each sampled step should record.

    Returns the expected numbers of the steps a `expect_every` rate samples, the
    closure evaluations per step, and whether each step() returned the very object
    its first evaluation returned.
    """
    expected: list[Expected] = []
    evaluations: list[int] = []
    same_result: list[bool] = []
    for step in range(steps):
        x, y = batch(step)
        sampled = w is not None and step % expect_every == 0
        if sampled:
            expected.append(expected_at(model, x, y))
            before = {n: layer_vector(model, n) for n in LAYERS}
        returned: list[torch.Tensor] = []

        def closure(x: torch.Tensor = x, y: torch.Tensor = y,
                    returned: list[torch.Tensor] = returned) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if w is not None and observe:
                w.observe_loss(loss)
            loss.backward()
            returned.append(loss)
            return loss

        out = opt.step(closure=closure) if keyword else opt.step(closure)
        evaluations.append(len(returned))
        same_result.append(out is returned[0])
        if sampled:
            expected[-1].update = updates(model, before)
    return expected, evaluations, same_result


def check_records(w: vgdiag.Watch, expected: list[Expected], steps: list[int]) -> None:
    records = list(w.history)
    assert [r.step for r in records] == steps
    for record, e in zip(records, expected):
        for n in LAYERS:
            s = record.layers[n]
            assert e.grad[n] > 0
            assert s.grad_norm == pytest.approx(e.grad[n], rel=1e-5), (record.step, n)
            assert s.grad_output_norm == pytest.approx(e.grad_output[n], rel=1e-5), (
                record.step, n)
            assert e.update[n] > 0
            assert s.update_ratio == pytest.approx(e.update[n], rel=1e-5), (record.step, n)
        for n in ACTS:
            s = record.layers[n]
            assert s.act_mean == pytest.approx(e.act_mean[n], rel=1e-5), (record.step, n)
            assert s.act_std == pytest.approx(e.act_std[n], rel=1e-5), (record.step, n)
        assert record.loss == pytest.approx(e.loss, rel=1e-6), record.step


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name  # bit-identical, not close


def lbfgs(model: nn.Module) -> torch.optim.LBFGS:
    return torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)


def test_lbfgs_records_each_step_at_its_starting_weights() -> None:
    steps = 6
    model = mlp()
    opt = lbfgs(model)
    with vgdiag.watch(model, opt, every=1, hist_every=1, num_classes=4) as w:
        expected, evaluations, same = train(model, opt, steps, w)
        observed = w.observed_losses
        epoch = w.observe_epoch()
    assert all(n > 1 for n in evaluations), evaluations  # LBFGS did evaluate again
    assert all(same)  # step() returned what the user's closure returned
    check_records(w, expected, list(range(steps)))
    # Only the first evaluation's loss is the step's: one per step is counted.
    assert observed == steps
    assert epoch.train_loss == pytest.approx(sum(e.loss for e in expected) / steps, rel=1e-9)
    assert "zero_gradient" not in {f.id for f in w.findings()}
    for record in w.history:  # the first evaluation's gradients, also in the histograms
        assert set(record.grad_hist) == set(LAYERS)
        assert all(h.counts.sum() > 0 for h in record.grad_hist.values())

    plain = mlp()
    plain_opt = lbfgs(plain)
    _, plain_evaluations, _ = train(plain, plain_opt, steps, None)
    assert plain_evaluations == evaluations
    assert_same_parameters(model, plain)


def test_lbfgs_every_second_step_measures_the_closures_forward() -> None:
    """Sampled steps apart: the hooks armed after the previous step must still be on
    for the forward pass inside the next sampled step's closure."""
    steps = 7
    model = mlp()
    opt = lbfgs(model)
    with vgdiag.watch(model, opt, every=2, hist_every=0) as w:
        expected, _, _ = train(model, opt, steps, w, expect_every=2)
    check_records(w, expected, [0, 2, 4, 6])
    plain = mlp()
    train(plain, lbfgs(plain), steps, None)
    assert_same_parameters(model, plain)


def test_sgd_closure_at_the_default_rate() -> None:
    # SGD takes a closure too; the loss given to no observe_loss() is the one returned.
    # Steps between samples pass their closure straight through.
    steps = 2 * DEFAULT_EVERY + 1
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    with vgdiag.watch(model, opt, every=DEFAULT_EVERY) as w:
        assert w.probe.every == DEFAULT_EVERY
        expected, evaluations, same = train(model, opt, steps, w, observe=False,
                                            keyword=True, expect_every=DEFAULT_EVERY)
    assert evaluations == [1] * steps and all(same)
    check_records(w, expected, [0, DEFAULT_EVERY, 2 * DEFAULT_EVERY])
    assert "zero_gradient" not in {f.id for f in w.findings()}
    plain = mlp()
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.2, momentum=0.9)
    train(plain, plain_opt, steps, None, keyword=True)
    assert_same_parameters(model, plain)


class Boom(RuntimeError):
    pass


def no_hooks_left(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
        assert not m._backward_hooks and not m._backward_pre_hooks, name
    for name, p in model.named_parameters():
        assert not p._backward_hooks, name
        assert not getattr(p, "_post_accumulate_grad_hooks", None), name
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert torch._C._len_torch_function_stack() == 0  # no activation mode left on


@pytest.mark.parametrize("evaluation", [1, 3])  # the measured one, or a line search's
def test_an_exception_in_the_closure_reaches_the_user_unchanged(evaluation: int) -> None:
    model = mlp()
    opt = lbfgs(model)
    raised = Boom("the user's closure broke")
    at = {"step": 0, "calls": 0}

    def closure() -> torch.Tensor:
        opt.zero_grad()
        x, y = batch(at["step"])
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        at["calls"] += 1
        if at["step"] == 2 and at["calls"] == evaluation:
            raise raised
        return loss

    with pytest.raises(Boom) as caught, vgdiag.watch(model, opt, every=1) as w:
        for at["step"] in range(4):
            at["calls"] = 0
            opt.step(closure)
    assert caught.value is raised
    assert caught.traceback[-1].name == "closure"  # raised there, not re-raised by us
    assert at["calls"] == evaluation  # and not called again after it raised
    assert w.status == "failed"
    assert [r.step for r in w.history] == [0, 1]  # the broken step is not recorded
    assert all(r.layers["0"].grad_norm > 0 for r in w.history)
    no_hooks_left(model, opt)
    at["step"] = 0
    opt.step(closure)  # training goes on without the probe
    no_hooks_left(model, opt)


def test_a_closure_the_optimizer_never_calls_warns_once() -> None:
    class Skipping(torch.optim.Optimizer):
        """Plain SGD that takes a closure and ignores it."""

        def __init__(self, params: object, lr: float) -> None:
            super().__init__(params, {"lr": lr})  # type: ignore[arg-type]

        @torch.no_grad()
        def step(self, closure: Closure | None = None) -> None:  # type: ignore[override]
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])

    model = mlp()
    opt = Skipping(model.parameters(), lr=0.1)
    grads = []
    with pytest.warns(UserWarning, match=r"did not call the closure.*before_update"), \
            vgdiag.watch(model, opt, every=1) as w:
        for step in range(2):
            x, y = batch(step)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads.append({n: layer_vector(model, n, grad=True).norm().item() for n in LAYERS})
            opt.step(lambda: torch.zeros(()))
    for record, g in zip(w.history, grads):
        for n in LAYERS:
            assert record.layers[n].grad_norm == pytest.approx(g[n], rel=1e-5)
            assert math.isfinite(record.layers[n].update_ratio)


def grad_histograms(set_to_none: bool) -> list[dict[str, tuple[float, float, list[int]]]]:
    model = mlp()
    opt = lbfgs(model)

    def closure(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        opt.zero_grad(set_to_none=set_to_none)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with vgdiag.watch(model, opt, every=1, hist_every=1) as w:
        for step in range(3):
            opt.step(functools.partial(closure, *batch(step)))
    return [{n: (h.lo, h.hi, h.counts.tolist()) for n, h in r.grad_hist.items()}
            for r in w.history]


def test_histograms_keep_the_first_evaluations_gradients_through_zero_grad_in_place() -> None:
    """zero_grad(set_to_none=False) zeroes and refills the same .grad tensors in every
    evaluation: the histograms, taken after the step, must still show the first's."""
    fresh = grad_histograms(set_to_none=True)
    assert len(fresh) == 3 and all(set(h) == set(LAYERS) for h in fresh)
    assert grad_histograms(set_to_none=False) == fresh
