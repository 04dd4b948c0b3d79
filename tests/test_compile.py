"""vgdiag.watch on torch.compile'd models: the same numbers as on the eager model.

The "aot_eager" backend runs the real torch.compile front end (Dynamo tracing the
forward hooks, AOTAutograd building the backward) without generating C++ code, so
these tests take a few seconds; the one with the default backend is marked slow.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import vgdiag
from vgdiag.engine.records import LAYER_STAT_KEYS


def _compile_supported() -> bool:
    if not hasattr(torch, "compile"):
        return False
    try:
        import torch._dynamo as dynamo
    except Exception:
        return False
    check = getattr(dynamo, "is_dynamo_supported", None)
    return bool(check()) if callable(check) else True


pytestmark = pytest.mark.skipif(not _compile_supported(),
                                reason="torch.compile is not supported on this platform")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Dynamo keeps compiled graphs per code object, and every test compiles the same
    nn.Sequential: a graph one test traced must not serve the next."""
    import torch._dynamo as dynamo

    dynamo.reset()
    yield
    dynamo.reset()


def make_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def train(model: nn.Module, steps: int = 4, **compile_kwargs):
    """Train `model` (maybe compiled) under a watch; returns the watch and the losses."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    target = torch.compile(model, **compile_kwargs) if compile_kwargs else model
    losses = []
    with vgdiag.watch(target, opt, every=2, hist_every=1) as w:
        for step in range(steps):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(target(x), y)
            w.observe_loss(loss)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return w, losses


def assert_same_records(eager: vgdiag.Watch, compiled: vgdiag.Watch, skip=()) -> None:
    assert [r.step for r in compiled.history] == [r.step for r in eager.history] == [0, 2]
    for a, b in zip(eager.history, compiled.history):
        assert list(b.layers) == list(a.layers) == ["0", "2", "4"]
        assert b.loss == pytest.approx(a.loss, rel=1e-5)
        for name in a.layers:
            for key in LAYER_STAT_KEYS:
                if key in skip:
                    continue
                want, got = getattr(a.layers[name], key), getattr(b.layers[name], key)
                assert got == pytest.approx(want, rel=1e-4, abs=1e-7, nan_ok=True), (name, key)
        assert {n: h.counts.sum() for n, h in b.weight_hist.items()} == {
            n: h.counts.sum() for n, h in a.weight_hist.items()}


def test_compiled_model_records_what_the_eager_model_records():
    eager, eager_losses = train(make_model())
    model = make_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, losses = train(model, backend="aot_eager")
    # the probe's hooks trace cleanly (no "Dynamo does not know how to trace" from them)
    assert not [w for w in caught if "vgdiag" in w.filename and "Dynamo" in str(w.message)]
    assert not [w for w in caught if "get_ident" in str(w.message)]
    assert losses == pytest.approx(eager_losses, rel=1e-6)
    assert [i.name for i in compiled.layers] == [i.name for i in eager.layers]
    assert compiled.layers[0].activation == "1"  # forward hooks ran inside the graph
    assert_same_records(eager, compiled)
    assert not any(m._forward_hooks for m in model.modules())  # closed cleanly


def test_unsampled_steps_run_the_whole_compiled_graph():
    # Sampled steps run eager (probe_compile): the graph Dynamo traces has no hooks
    # in it, so it is not split, and it is the one every other step runs.
    import torch._dynamo as dynamo
    import torch._dynamo.eval_frame as eval_frame
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    eager, _ = train(make_model(), steps=6)
    compiled, _ = train(make_model(), steps=6, backend="aot_eager")
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]
    assert eval_frame._stance.stance == "default"  # put back when the hooks came off
    assert [r.step for r in compiled.history] == [0, 2, 4]
    for a, b in zip(eager.history, compiled.history):
        for name in a.layers:
            assert b.layers[name].grad_norm == pytest.approx(a.layers[name].grad_norm, rel=1e-5)


def test_two_watched_compiled_models_share_the_stance_and_put_it_back():
    # A GAN's two models, each watched, armed at once: the first to enter saves the
    # loop's stance, the last to leave restores it, whatever the order.
    import torch._dynamo.eval_frame as eval_frame

    torch.compiler.set_stance("eager_on_recompile")  # the loop's own, kept
    try:
        a, b = make_model(), make_model()
        ca, cb = (torch.compile(m, backend="aot_eager") for m in (a, b))
        oa, ob = (torch.optim.SGD(m.parameters(), lr=0.1) for m in (a, b))
        wa, wb = vgdiag.watch(ca, oa, every=2), vgdiag.watch(cb, ob, every=3)
        for _ in range(5):
            for model, opt in ((ca, oa), (cb, ob)):
                opt.zero_grad()
                model(torch.randn(4, 6)).pow(2).mean().backward()
                opt.step()
        wa.close()
        wb.close()
        assert eval_frame._stance.stance == "eager_on_recompile"
        assert [r.step for r in wa.history] == [0, 2, 4] and len(wb.history) == 2
        assert all(r.layers["0"].act_mean == r.layers["0"].act_mean for r in wa.history)
    finally:
        torch.compiler.set_stance("default")


def _stance() -> str:
    import torch._dynamo.eval_frame as eval_frame

    return eval_frame._stance.stance


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, seen: list[str]) -> None:
    for _ in range(n):
        opt.zero_grad()
        model(torch.randn(4, 6)).pow(2).mean().backward()
        opt.step()
        seen.append(_stance())


def test_the_stance_is_put_back_on_every_path_and_a_loops_own_is_kept():
    import gc

    import torch._dynamo as dynamo

    dynamo.reset()
    model = make_model()
    compiled = torch.compile(model, backend="aot_eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    # A sample dropped in the forward (a hook that fails) keeps no stance past its step.
    w = vgdiag.watch(compiled, opt, every=3)
    w.probe._drop_sample(RuntimeError("a hook failed"))
    seen: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _steps(compiled, opt, 4, seen)
    assert seen == ["default", "default", "force_eager", "default"]
    w.close()
    # A probe dropped without close(), with its model and optimizer (whose hooks hold
    # it), leaves no stance behind once collected.
    # (After its first backward: until then the hooks that read the depth order hold
    # it, as a parameter's post-accumulate-grad hooks are never collected.)
    other = make_model()
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    other_compiled = torch.compile(other, backend="aot_eager")
    dropped = vgdiag.watch(other_compiled, other_opt, every=1)
    _steps(other_compiled, other_opt, 1, [])
    assert _stance() == "force_eager"  # armed for the next step
    del dropped, other, other_opt, other_compiled
    gc.collect()
    assert _stance() == "default"
    # A stance the loop sets while the probe is armed is the loop's: kept.
    try:
        w = vgdiag.watch(compiled, opt, every=3)
        torch.compiler.set_stance("eager_on_recompile")
        seen = []
        _steps(compiled, opt, 2, seen)
        w.close()
        assert seen == ["eager_on_recompile", "eager_on_recompile"]
        assert _stance() == "eager_on_recompile"
    finally:
        torch.compiler.set_stance("default")


def test_fullgraph_under_a_stance_the_loop_set_itself_still_trains():
    # The loop overrides the probe's eager stance: the forward is traced with the
    # probe's hooks in it, and a tensor hook would be an error under fullgraph=True.
    import torch._dynamo as dynamo

    dynamo.reset()
    model = make_model()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        w = vgdiag.watch(compiled, opt, every=1)
        torch.compiler.set_stance("default")  # the loop's choice, after the watch
        _steps(compiled, opt, 3, [])
        w.close()
    finally:
        torch.compiler.set_stance("default")
    assert len(w.history) == 3
    assert all(math.isfinite(s.grad_norm) for r in w.history for s in r.layers.values())


def test_fullgraph_compile_records_everything_as_sampled_steps_run_eager(monkeypatch):
    eager, _ = train(make_model())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, _ = train(make_model(), backend="aot_eager", fullgraph=True)
    assert not [w for w in caught if "vgdiag" in str(w.message)]
    assert_same_records(eager, compiled)
    # A PyTorch that cannot switch to eager runs the hooks in the graph, where
    # fullgraph=True refuses the output-gradient hook: said once, the rest recorded.
    import torch._dynamo as dynamo

    monkeypatch.setattr("vgdiag.engine.probe.can_run_eager", lambda: False)
    dynamo.reset()  # the graph traced above, without hooks, would be reused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, _ = train(make_model(), backend="aot_eager", fullgraph=True)
    messages = [str(w.message) for w in caught if "vgdiag" in str(w.message)]
    assert len(messages) == 1 and "grad_output_norm" in messages[0]
    assert all(math.isnan(s.grad_output_norm) for r in compiled.history
               for s in r.layers.values())
    for a, b in zip(eager.history, compiled.history):
        for name in a.layers:
            assert b.layers[name].grad_norm == pytest.approx(a.layers[name].grad_norm, rel=1e-5)


@pytest.mark.slow  # the default backend generates and compiles C++: 10-30 s on a cold cache
def test_default_backend():
    eager, _ = train(make_model())
    model = make_model()
    compiled, _ = train(model, mode="default")
    assert_same_records(eager, compiled)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_compiled_function_activations_are_measured_on_the_eager_sampled_steps(monkeypatch):
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:  # eager: measured, no warning
        warnings.simplefilter("always")
        eager, _ = train(Functional())
    assert not [w for w in caught if "vgdiag" in str(w.message)]
    torch.manual_seed(0)
    compiled, _ = train(Functional(), backend="eager")
    for a, b in zip(eager.history, compiled.history):
        assert b.layers["a"].act_dead == pytest.approx(a.layers["a"].act_dead)
    # Without an eager stance the mode would change what Dynamo traces: said, once.
    import torch._dynamo as dynamo

    monkeypatch.setattr("vgdiag.engine.probe.can_run_eager", lambda: False)
    dynamo.reset()
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled, _ = train(Functional(), backend="eager")
    messages = [str(w.message) for w in caught if "vgdiag" in str(w.message)]
    assert len(messages) == 1 and "called as functions" in messages[0], messages
    assert math.isnan(compiled.history[-1].layers["a"].act_dead)


def test_vgdiag_run_on_a_compiled_model_completes(tmp_path, capsys):
    from vgdiag.cli.app import main

    path = tmp_path / "compiled.py"
    path.write_text(
        "import torch\nfrom torch import nn\n\n"
        "class Net(nn.Module):  # no __len__: a compiled wrapper's bool() calls it\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.act, self.b = nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)\n\n"
        "    def forward(self, x):\n"
        "        return self.b(self.act(self.a(x.flatten(1))))\n\n"
        "def net():\n"
        "    return torch.compile(Net(), backend='eager')\n")
    out = tmp_path / "run"
    code = main(["run", "--headless", "--device", "cpu", "--epochs", "1", "--model",
                 f"{path}:net", "--out", str(out)])
    _, err = capsys.readouterr()
    assert code == 0, err  # the test evaluation once asked a compiled module for len()
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["test"]["acc"] is not None
