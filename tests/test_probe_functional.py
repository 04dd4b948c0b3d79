"""Activations called as functions (probe_functional): measured as their modules would be."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import vgdiag
from vgdiag.engine.diagnosis import diagnose

STATS = ("act_mean", "act_std", "act_saturated", "act_dead")


class Stack(nn.Module):
    """Linear layers with an activation after each but the last: as modules or calls."""

    def __init__(self, acts: list[str], functional: bool, std: float = 0.3) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(24, 24) for _ in acts)
        self.head = nn.Linear(24, 4)
        for layer in self.fc:
            nn.init.normal_(layer.weight, std=std)
        self.acts = acts
        self.functional = functional
        modules = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
        self.mods = nn.ModuleList(modules[a]() for a in acts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        calls = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": lambda t: t.sigmoid(),
                 "gelu": F.gelu}
        for layer, act, mod in zip(self.fc, self.acts, self.mods):
            x = calls[act](layer(x)) if self.functional else mod(layer(x))
        return self.head(x)


def train(model: nn.Module, steps: int = 4, seed: int = 0, **kw):
    torch.manual_seed(seed)
    xs = [torch.randn(64, 24) for _ in range(steps)]
    ys = [torch.randint(0, 4, (64,)) for _ in range(steps)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    stack_sizes = []
    with vgdiag.watch(model, opt, every=1, **kw) as w:
        for x, y in zip(xs, ys):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
            stack_sizes.append(torch._C._len_torch_function_stack())
        return list(w.history), w.layers, stack_sizes


def fit(model: nn.Module, steps: int, width: int = 8) -> list:
    """`steps` SGD steps on random batches under a watch sampling every step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=1) as w:
        for _ in range(steps):
            opt.zero_grad()
            model(torch.randn(4, width)).sum().backward()
            opt.step()
        return list(w.history)


def test_function_calls_measure_exactly_what_the_same_modules_do():
    acts = ["relu", "tanh", "sigmoid", "gelu", "relu"]
    torch.manual_seed(1)
    as_calls = Stack(acts, functional=True)
    as_modules = Stack(acts, functional=False)
    as_modules.load_state_dict(as_calls.state_dict())
    rec_f, layers_f, stack = train(as_calls)
    rec_m, layers_m, _ = train(as_modules)
    assert stack == [0] * 4  # the mode never outlives a forward pass
    assert [i.activation for i in layers_f] == ["relu()", "tanh()", "sigmoid()", "gelu()",
                                                "relu()", None]
    assert [i.activation for i in layers_m] == [f"mods.{k}" for k in range(5)] + [None]
    for rf, rm in zip(rec_f, rec_m):
        assert rf.step == rm.step
        for name in ("fc.0", "fc.1", "fc.2", "fc.3", "fc.4"):
            for key in STATS:
                a, b = getattr(rf.layers[name], key), getattr(rm.layers[name], key)
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6), \
                    (rf.step, name, key, a, b)
        assert math.isnan(rf.layers["head"].act_std)
    # the kinds: relu reports dead units, tanh and sigmoid saturation, gelu neither
    last = rec_f[-1].layers
    assert not math.isnan(last["fc.0"].act_dead) and math.isnan(last["fc.0"].act_saturated)
    assert not math.isnan(last["fc.1"].act_saturated) and not math.isnan(last["fc.2"].act_saturated)
    assert math.isnan(last["fc.3"].act_saturated) and math.isnan(last["fc.3"].act_dead)


def test_a_saturated_functional_tanh_net_is_diagnosed_saturated():
    torch.manual_seed(2)
    model = Stack(["tanh"] * 6, functional=True, std=3.0)  # wide init: tanh pinned at +-1
    records, layers, _ = train(model, steps=6)
    sat = [records[-1].layers[f"fc.{k}"].act_saturated for k in range(6)]
    assert min(sat[1:]) > 0.5, sat
    ids = {f.id for f in diagnose(records, layers)}
    assert "saturated_activations" in ids, ids


@pytest.mark.parametrize("functional", [True, False])
def test_a_finding_says_in_words_to_swap_saturating_function_calls(functional: bool):
    # No plugin can replace torch.sigmoid called in forward: the advice is said anyway.
    torch.manual_seed(3)
    model = Stack(["sigmoid"] * 6, functional=functional, std=0.05)
    records, layers, _ = train(model, steps=6)
    vanishing = [f for f in diagnose(records, layers) if f.id == "vanishing_gradient"]
    assert vanishing, [f.id for f in diagnose(records, layers)]
    said = "called as functions in forward" in vanishing[0].message
    assert said == functional
    if functional:
        assert "(sigmoid())" in vanishing[0].message and "torch.relu" in vanishing[0].message


def test_module_activations_turn_the_mode_off_after_the_trial():
    seen = []

    class Spy(nn.Module):  # a module activation that reads the mode stack while it runs
        def forward(self, x):
            seen.append(torch._C._len_torch_function_stack())
            return torch.relu(x)

    class WithModules(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.act = nn.Linear(8, 8), nn.Linear(8, 2), nn.ReLU()
            self.spy = Spy()

        def forward(self, x):
            return self.b(self.act(self.a(self.spy(x))))

    class WithCalls(WithModules):
        def forward(self, x):
            return self.b(F.relu(self.a(self.spy(x))))

    for cls, expect in ((WithModules, 0), (WithCalls, 1)):
        seen.clear()
        model = cls()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with vgdiag.watch(model, opt, every=1):
            for _ in range(5):
                opt.zero_grad()
                model(torch.randn(4, 8)).sum().backward()
                opt.step()
        assert seen[:2] == [1, 1] and seen[2:] == [expect] * 3, (cls.__name__, seen)


def test_a_forward_that_raises_or_leaves_its_own_mode_keeps_the_stack_right():
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                raise ValueError("user error")
            return F.relu(self.fc(x))

    model = Boom()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=1):
        with pytest.raises(ValueError):
            model(torch.randn(2, 4))
        assert torch._C._len_torch_function_stack() == 0
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        assert torch._C._len_torch_function_stack() == 0

    class Leaky(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    user_mode = Leaky()

    class LeavesMode(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            user_mode.__enter__()  # never exited: the user's own mode stays on top
            return F.relu(self.fc(x))

    model2 = LeavesMode()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    try:
        with vgdiag.watch(model2, opt2, every=1):
            model2(torch.randn(2, 4)).sum().backward()
            opt2.step()
            top = torch._C._get_function_stack_at(torch._C._len_torch_function_stack() - 1)
            assert top is user_mode  # ours is never popped in its place
    finally:
        while torch._C._len_torch_function_stack():
            torch._C._pop_torch_function_stack()


@pytest.mark.parametrize("eager_sampling", [True, False])
def test_no_mode_where_part_of_the_model_is_compiled_unless_sampled_steps_run_eager(
        eager_sampling: bool, monkeypatch) -> None:
    # Sampled steps run eager where PyTorch allows it (probe_compile): the mode then
    # sees the compiled part's calls as an eager model's; otherwise it stays off.
    import torch._dynamo as dynamo

    if not eager_sampling:
        monkeypatch.setattr("vgdiag.engine.probe.can_run_eager", lambda: False)
    dynamo.reset()
    seen = []

    class Partly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(8, 8)
            self.body = torch.compile(nn.Sequential(nn.Linear(8, 8), nn.ReLU(),
                                                    nn.Linear(8, 2)), backend="eager")

        def forward(self, x):
            seen.append(torch._C._len_torch_function_stack())
            return self.body(F.relu(self.stem(x)))

    records = fit(Partly(), 2)
    if eager_sampling:
        assert seen == [1, 1]
        assert math.isfinite(records[-1].layers["stem"].act_mean)
    else:
        assert seen == [0, 0]  # a mode would change what torch.compile traces
        assert math.isnan(records[-1].layers["stem"].act_mean)


def test_a_compiled_function_inside_forward_still_trains_and_compiles():
    gelu2 = torch.compile(lambda t: F.gelu(t) * 2, backend="eager", fullgraph=True)

    class Uses(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.head = nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(gelu2(self.fc(x)))  # fullgraph: a graph break would raise

    assert len(fit(Uses(), 3)) == 3
    assert torch._C._len_torch_function_stack() == 0


def test_the_last_output_is_not_kept_alive_where_the_root_never_runs():
    import gc
    import weakref

    class Parts(nn.Module):  # a Lightning-style root: its parts are called, not itself
        def __init__(self) -> None:
            super().__init__()
            self.enc, self.dec = nn.Linear(8, 8), nn.Linear(8, 512)

    model = Parts()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=10):
        opt.zero_grad()
        out = model.dec(F.relu(model.enc(torch.randn(4, 8))))
        out.sum().backward()
        opt.step()
        held = weakref.ref(out)
        del out
        gc.collect()
        assert held() is None  # the probe holds no reference to the logits


def test_an_interrupted_forward_a_nested_root_call_and_two_probes_leave_no_mode():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)
            self.interrupt = False
            self.nested = False

        def forward(self, x):
            h = F.relu(self.fc(x))
            if self.interrupt:
                raise KeyboardInterrupt  # torch runs no always_call hook for it
            if self.nested:
                self.nested = False
                with torch.no_grad():
                    self(x)  # the root inside its own forward
                assert torch._C._len_torch_function_stack() == 1  # the outer mode stays
            return self.head(h)

    def step(model, opt):
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, every=1) as w:
        model.interrupt = True
        with pytest.raises(KeyboardInterrupt):
            model(torch.randn(3, 4))
        model.interrupt = False
        model.nested = True
        step(model, opt)  # the step after: the leftover mode is gone, a fresh one runs
        assert torch._C._len_torch_function_stack() == 0
        step(model, opt)
        assert not math.isnan(w.history[-1].layers["fc"].act_dead)
    model.interrupt = True
    with vgdiag.watch(model, opt, every=1), pytest.raises(KeyboardInterrupt):
        model(torch.randn(3, 4))
    assert torch._C._len_torch_function_stack() == 0  # close() takes it off

    model.interrupt = False
    first = vgdiag.watch(model, opt, every=1)
    second = vgdiag.watch(model, opt, every=1)
    step(model, opt)
    first.close()
    second.close()
    assert torch._C._len_torch_function_stack() == 0
