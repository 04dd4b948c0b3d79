"""vgdiag.watch(model, optimizer, out=DIR): a user's own loop writes a run folder.

The folder must be the one `vgdiag run` writes: the real `report` and `view` read it,
`report --fail-on` gates on it, and its status says how the loop ended (close, an
exception, Ctrl-C, SIGTERM, or the interpreter exiting with the watch open).
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import vgdiag
from vgdiag.errors import UserError
from vgdiag.runs.reader import read_run

STEPS_PER_EPOCH = 20  # 3 epochs pass the diagnosis' minimum steps for a stalled loss
BATCH = 16


def deep_sigmoid() -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    width = 64
    for _ in range(5):
        layers += [nn.Linear(width, 32), nn.Sigmoid()]
        width = 32
    return nn.Sequential(*layers, nn.Linear(32, 10))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    # Random labels: nothing to learn, so the loss stays at ln(10).
    return torch.rand(STEPS_PER_EPOCH * BATCH, 1, 8, 8, generator=g), torch.randint(
        0, 10, (STEPS_PER_EPOCH * BATCH,), generator=g)


def train(w: vgdiag.Watch, model: nn.Module, opt: torch.optim.Optimizer, epochs: int,
          *, observe: bool = True) -> list[list[float]]:
    """The user's loop; returns each epoch's losses as the loop saw them."""
    x, y = data()
    losses: list[list[float]] = []
    for epoch in range(epochs):
        losses.append([])
        for i in range(STEPS_PER_EPOCH):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[i * BATCH:(i + 1) * BATCH]),
                                               y[i * BATCH:(i + 1) * BATCH])
            if observe:
                w.observe_loss(loss)
            loss.backward()
            opt.step()
            losses[-1].append(loss.item())
        if observe:
            w.observe_epoch(val_acc=0.1 * (epoch + 1))
    return losses


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vgdiag", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_folder_holds_what_the_loop_recorded(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    out = tmp_path / "mine"
    with vgdiag.watch(model, opt, out=out, every=2, hist_every=1, num_classes=10) as w:
        assert w.out == out
        assert json.loads((out / "summary.json").read_text())["status"] == "running"
        losses = train(w, model, opt, epochs=3)
    assert w.status == "completed"

    run = read_run(out)
    assert run.status == "completed" and run.notes == []
    assert run.name == "mine"
    experiment = run.config["experiment"]
    assert run.config["source"] == "watch" and run.config["world_size"] == 1
    assert (experiment["model"], experiment["optimizer"]) == ("Sequential", "SGD")
    assert experiment["train"]["lr"] == 0.05 and experiment["train"]["every"] == 2
    assert run.config["torch_version"] == torch.__version__
    # Every sampled step is in the folder, as the probe measured it.
    assert [r.step for r in run.records] == list(range(0, 3 * STEPS_PER_EPOCH, 2))
    for saved, kept in zip(run.records, w.history):
        assert saved.loss == pytest.approx(kept.loss)
        assert saved.layers["1"].grad_norm == pytest.approx(kept.layers["1"].grad_norm)
        assert saved.weight_hist.keys() == kept.weight_hist.keys() != set()
    assert run.records[1].loss == pytest.approx(losses[0][2], rel=1e-6)
    assert [r.epoch for r in run.records] == [1] * 10 + [2] * 10 + [3] * 10
    # Epochs: train_loss is the mean of the observed losses; val_acc as given.
    assert [e.train_loss for e in run.epochs] == pytest.approx(
        [sum(e) / len(e) for e in losses], rel=1e-9)
    assert [e.val_acc for e in run.epochs] == pytest.approx([0.1, 0.2, 0.3])
    assert all(math.isnan(e.train_acc) and math.isnan(e.val_loss) for e in run.epochs)
    assert [e.steps for e in run.epochs] == [20, 40, 60]
    assert run.summary["steps"] == 3 * STEPS_PER_EPOCH
    assert [li.name for li in run.layers] == ["1", "3", "5", "7", "9", "11"]
    ids = {f.id for f in run.findings}
    # 60 steps at ln(10): past Thresholds.stall_min_steps, the loss is called stalled.
    assert {"loss_stalled", "vanishing_gradient"} <= ids, ids
    assert {f.id for f in w.findings()} == ids


@pytest.mark.parametrize(("plan", "sampled"), [
    ({}, list(range(50)) + [50, 75, 100]),  # length unknown: the first 50, then every 25th
    ({"total_epochs": 2, "steps_per_epoch": 60}, list(range(0, 101, 2))),  # 120 // 50
])
def test_the_default_sampling_gives_a_short_loop_enough_samples(
        plan: dict[str, int], sampled: list[int]) -> None:
    # A loop of 101 steps sampled every 25th would be diagnosed on 5 samples.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, **plan) as w:
        for _ in range(101):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(4, 8)),
                                        torch.randint(0, 3, (4,))).backward()
            opt.step()
    assert [r.step for r in w.history] == sampled


def test_report_and_fail_on_work_on_the_folder(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=3, num_classes=10) as w:
        train(w, model, opt, epochs=3)
    md = cli("report", str(tmp_path / "run"))
    assert md.returncode == 0, md.stderr
    assert "**Status: completed**" in md.stdout and "vanishing\\_gradient" in md.stdout
    assert "loss\\_stalled" in md.stdout
    gate = cli("report", str(tmp_path / "run"), "--format", "json", "--fail-on", "error")
    assert gate.returncode == 1, gate.stderr
    assert json.loads(gate.stdout)["status"] == "completed"
    html = cli("report", str(tmp_path / "run"), "--format", "html", "--out",
               str(tmp_path / "r.html"))
    assert html.returncode == 0 and "<svg" in (tmp_path / "r.html").read_text()


def test_the_folder_replays_in_the_dashboard(tmp_path: Path) -> None:
    from vgdiag.tui.app import build_app
    from vgdiag.tui.widgets import RunHeader

    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=1, num_classes=10) as w:
        train(w, model, opt, epochs=2)
    saved = read_run(tmp_path / "run")

    async def main() -> None:
        app = build_app(run=saved, title="view")
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            view = app.view
            assert view is not None and view.status == "completed"
            assert [r.step for r in view.records] == list(range(2 * STEPS_PER_EPOCH))
            assert len(view.epochs) == 2 and view.weight_hists.keys() == {
                li.name for li in saved.layers}
            header = app.query_one(RunHeader)
            text = "\n".join(s.text for s in header.render_lines(header.region.reset_offset))
            assert "completed (saved run)" in text
            await pilot.press("q")

    asyncio.run(main())


def test_losses_not_given_are_left_out(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=1) as w:
        train(w, model, opt, epochs=1, observe=False)
    run = read_run(tmp_path / "run")
    assert run.epochs == [] and len(run.records) == STEPS_PER_EPOCH
    assert all(math.isnan(r.loss) for r in run.records)
    assert "loss_stalled" not in {f.id for f in run.findings}
    assert run.summary["status"] == "completed" and run.summary["num_classes"] == 0
    assert cli("report", str(tmp_path / "run")).returncode == 0


def test_epochs_without_a_loss_given_are_not_a_divergence(tmp_path: Path) -> None:
    # Lightning's manual optimisation returning nothing: epochs end, no loss is given;
    # their NaN train_loss is "not given", not a non-finite loss that fails a gate.
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=2, num_classes=10) as w:
        for _ in range(2):
            train(w, model, opt, epochs=1, observe=False)
            w.observe_epoch(val_acc=0.1)
    run = read_run(tmp_path / "run")
    assert len(run.epochs) == 2 and all(math.isnan(e.train_loss) for e in run.epochs)
    assert "non_finite" not in {f.id for f in run.findings}
    assert "non_finite" not in run.summary["verdict"]


def test_an_exception_in_the_loop_marks_the_folder_failed(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(RuntimeError, match="data ran out"), \
            vgdiag.watch(model, opt, out=tmp_path / "run", every=1) as w:
        train(w, model, opt, epochs=1)
        raise RuntimeError("data ran out\nsecond line")
    run = read_run(tmp_path / "run")
    assert run.status == "failed" and w.status == "failed"
    # one line, with where the user's code raised it (as `vgdiag run` says it)
    error = run.summary["error"]
    assert error.startswith("RuntimeError: data ran out second line (test_watch.py:")
    line = int(error.rsplit(":", 1)[1].rstrip(")"))
    assert "raise RuntimeError" in Path(__file__).read_text().splitlines()[line - 1]
    errors = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()
              if '"error"' in line]
    assert "raise RuntimeError" in errors[0]["traceback"]
    assert len(run.records) == STEPS_PER_EPOCH  # what was recorded is all there


def test_ctrl_c_in_the_loop_marks_the_folder_interrupted(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(KeyboardInterrupt), \
            vgdiag.watch(model, opt, out=tmp_path / "run", every=1) as w:
        train(w, model, opt, epochs=1)
        raise KeyboardInterrupt
    assert read_run(tmp_path / "run").status == "interrupted"


def test_a_bad_folder_is_refused_and_the_model_left_alone(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with pytest.raises(UserError, match="already holds files"):
        vgdiag.watch(model, opt, out=tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    assert all(not m._forward_hooks for m in model.modules())
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks


def test_a_failing_folder_never_breaks_training(tmp_path: Path) -> None:
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    w = vgdiag.watch(model, opt, out=tmp_path / "run", every=1)
    assert w._sink is not None
    store = w._sink.store  # type: ignore[attr-defined]

    def broken(event: object) -> None:
        raise OSError(28, "No space left on device")

    store.handle = broken
    with pytest.warns(UserWarning, match="stopped writing the run folder"):
        train(w, model, opt, epochs=2)
    w.close()
    assert w.status == "completed" and len(w.history) == 2 * STEPS_PER_EPOCH
    assert len(w.epochs) == 2


def test_a_closure_step_records_update_ratios(tmp_path: Path) -> None:
    """before_update()/after_update() bracket an update that runs forward and backward
    inside optimizer.step(closure), where the optimizer's own hooks come too early."""
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = data()
    w = vgdiag.watch(model, None, out=tmp_path / "run", every=1)
    expected = []
    for i in range(3):
        xb, yb = x[i * BATCH:(i + 1) * BATCH], y[i * BATCH:(i + 1) * BATCH]
        before = model[-1].weight.detach().clone(), model[-1].bias.detach().clone()

        def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xb), yb)
            w.observe_loss(loss)
            loss.backward()
            w.before_update()
            return loss

        opt.step(closure)
        w.after_update()
        grad = torch.cat([model[-1].weight.grad.flatten(), model[-1].bias.grad.flatten()])
        after = torch.cat([model[-1].weight.detach().flatten(), model[-1].bias.flatten()])
        delta = after - torch.cat([before[0].flatten(), before[1].flatten()])
        expected.append((grad.norm().item(), (delta.norm() / after.norm()).item()))
    w.close()
    run = read_run(tmp_path / "run")
    got = [(r.layers["11"].grad_norm, r.layers["11"].update_ratio) for r in run.records]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, rel=1e-5)
    assert all(e[1] > 0 for e in expected)


# ----- the process ends without close() ---------------------------------------------

SCRIPT = """
import sys, time, torch
from torch import nn
import vgdiag
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
w = vgdiag.watch(model, opt, out=sys.argv[1], every=1, num_classes=3)
mode = sys.argv[2]
if mode == "sigterm-two":  # a second watched model: both folders must be finished
    other = nn.Linear(8, 3)
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1)
    w2 = vgdiag.watch(other, opt2, out=sys.argv[1] + "-b", every=1)
for step in range(100000 if mode.startswith("sigterm") else 20):
    if mode == "sigterm-two":
        opt2.zero_grad()
        other(torch.randn(4, 8)).pow(2).mean().backward()
        opt2.step()
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 3, (4,)))
    w.observe_loss(loss)
    loss.backward()
    opt.step()
    if step == 5:
        w.observe_epoch()
        print("epoch", flush=True)
    if mode.startswith("sigterm") and step > 5:
        time.sleep(0.01)
    if mode == "caught" and step == 10:
        try:  # a library's exit, caught: training goes on, nothing ended
            sys.exit(2)
        except SystemExit:
            pass
if mode == "raise":
    raise ValueError("the user's code broke")
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
# mode "forgot": the loop ends without close()
"""


def run_script(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(SCRIPT))
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "run"), mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(("mode", "status", "code"), [
    ("forgot", "completed", 0), ("raise", "failed", 1), ("exit2", "failed", 2),
    ("exit0", "completed", 0), ("caught", "completed", 0)])
def test_exit_without_close_still_finishes_the_folder(tmp_path: Path, mode: str,
                                                      status: str, code: int) -> None:
    proc = run_script(tmp_path, mode)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    run = read_run(tmp_path / "run")
    assert run.status == status and len(run.records) == 20
    if mode == "exit2":  # a CI gate on the folder must not pass a job that exited 2
        assert run.summary["error"].startswith("SystemExit: 2")
    if mode == "raise":
        assert run.summary["error"].startswith("ValueError: the user's code broke (loop.py:")
        assert "ValueError: the user's code broke" in err  # the user's traceback stays


@pytest.mark.parametrize("mode", ["sigterm", "sigterm-two"])
def test_sigterm_marks_the_folder_interrupted_and_still_ends_the_process(
        tmp_path: Path, mode: str) -> None:
    proc = run_script(tmp_path, mode)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "epoch"
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    run = read_run(tmp_path / "run")
    assert run.status == "interrupted" and run.notes == []
    assert len(run.epochs) == 1 and len(run.records) > 6
    assert run.summary["steps"] == len(run.records)
    if mode == "sigterm-two":
        other = read_run(tmp_path / "run-b")
        assert other.status == "interrupted" and len(other.records) > 6


MID_WRITE = """
import os, signal, sys, torch
from torch import nn
import vgdiag
from vgdiag.engine import events
from vgdiag.engine.summary import RunSummary
apply = RunSummary.apply
def term_then_apply(self, event):
    # The signal lands inside the store's write of step 9: its line is written, the
    # summary has not folded it in yet.
    if isinstance(event, events.StepSampled) and event.record.step == 9:
        os.kill(os.getpid(), signal.SIGTERM)
    apply(self, event)
RunSummary.apply = term_then_apply
model = nn.Sequential(nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
w = vgdiag.watch(model, opt, out=sys.argv[1], every=1, num_classes=3)
for step in range(20):
    opt.zero_grad()
    nn.functional.cross_entropy(model(torch.randn(4, 8)), torch.randint(0, 3, (4,))).backward()
    opt.step()
"""


def test_a_sigterm_while_a_step_is_written_keeps_that_step(tmp_path: Path) -> None:
    # The folder is closed after the write in progress, never inside it: closing
    # inside it left the summary a step behind its records (or a record short).
    script = tmp_path / "loop.py"
    script.write_text(textwrap.dedent(MID_WRITE))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    run = read_run(tmp_path / "run")
    assert run.status == "interrupted"
    assert [r.step for r in run.records] == list(range(10))
    assert run.summary["steps"] == 10


def test_a_loop_stepping_another_optimizer_is_not_measured_and_fails_the_gate(
        tmp_path: Path) -> None:
    # The probe follows the optimizer it was given; a loop stepping a different one
    # is never sampled: that must not read as healthy, nor pass a CI gate.
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    other = torch.optim.SGD(model.parameters(), lr=0.05)
    with vgdiag.watch(model, other, out=tmp_path / "run", every=3, num_classes=10) as w:
        train(w, model, opt, epochs=2)
    run = read_run(tmp_path / "run")
    assert run.summary["verdict"] == "not measured"
    assert [f.id for f in run.findings][:1] == ["not_measured"]
    gate = cli("report", str(tmp_path / "run"), "--format", "json", "--fail-on", "error")
    assert gate.returncode == 1, gate.stderr


def test_layers_the_followed_optimizer_does_not_hold_are_named_once() -> None:
    # A backbone and a head with optimizers of their own: the probe follows one, so
    # the head's update is measured before its optimizer makes it (0): said, once.
    import warnings as w_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    backbone = torch.optim.SGD(model[0].parameters(), lr=0.1)
    head = torch.optim.Adam(model[2].parameters(), lr=1e-3)
    for followed, warns in ((backbone, True), (torch.optim.SGD(model.parameters()), False)):
        with w_.catch_warnings(record=True) as seen:
            w_.simplefilter("always")
            with vgdiag.watch(model, followed, every=1) as w:
                for _ in range(3):
                    backbone.zero_grad()
                    head.zero_grad()
                    model(torch.randn(4, 8)).pow(2).mean().backward()
                    followed.step()
                    if followed is backbone:
                        head.step()
        said = [s for s in seen if "not in the optimizer vgdiag follows" in str(s.message)]
        assert len(said) == int(warns)
        if warns:
            assert "1 layer with a gradient (2) is not" in str(said[0].message)
            assert said[0].filename == __file__  # it points at the user's loop
            assert all(r.layers["2"].update_ratio == 0 for r in w.history.records())


def test_a_diverging_loop_is_told_once_when_a_sampled_step_goes_non_finite() -> None:
    import warnings as w_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with w_.catch_warnings(record=True) as seen:
        w_.simplefilter("always")
        with vgdiag.watch(model, opt, every=2):
            for step in range(8):
                if step == 3:  # an update that blows the weights up
                    with torch.no_grad():
                        model[0].weight.fill_(float("inf"))
                opt.zero_grad()
                model(torch.randn(4, 8)).pow(2).mean().backward()
                opt.step()
    said = [s for s in seen if "is not finite" in str(s.message)]
    assert len(said) == 1 and said[0].filename == __file__
    assert str(said[0].message).startswith("vgdiag: step 4 is not finite (gradient of 0")


def test_parameter_groups_learning_rates_are_all_recorded(tmp_path: Path) -> None:
    from vgdiag.runs.report import render_report

    model = deep_sigmoid()
    opt = torch.optim.SGD([{"params": model[1].parameters(), "lr": 0.01},
                           {"params": model[3:].parameters(), "lr": 0.1}], lr=0.5)
    with vgdiag.watch(model, opt, out=tmp_path / "run", every=5, num_classes=10) as w:
        train(w, model, opt, epochs=1)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["experiment"]["train"]["lr"] == 0.01
    assert config["experiment"]["train"]["lr_groups"] == [0.01, 0.1]
    assert "| learning rate | 0.01, 0.1 (per parameter group) |" in render_report(
        read_run(tmp_path / "run"), "md")


def test_warnings_as_errors_never_raise_out_of_the_loop(capsys) -> None:
    # pytest's filterwarnings = error: what the probe says mid-step goes to stderr,
    # and the loop (its optimizer.step()) goes on.
    import warnings as w_

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with w_.catch_warnings():
        w_.simplefilter("error")
        with vgdiag.watch(model, opt, every=1, num_classes=10) as w:  # 10 != 3 outputs
            for step in range(4):
                if step == 2:
                    with torch.no_grad():
                        model[0].weight.fill_(float("inf"))
                opt.zero_grad()
                model(torch.randn(4, 8)).pow(2).mean().backward()
                opt.step()
    assert w.probe.step == 4 and [r.step for r in w.history] == [0, 1, 2, 3]
    err = capsys.readouterr().err
    assert "warning: vgdiag: num_classes=10" in err and "is not finite" in err


def test_micro_batch_losses_are_averaged_and_the_epoch_weights_by_samples() -> None:
    # Gradient accumulation over two micro-batches of 16 and 8 samples (a short last
    # batch): the step's record holds their mean, the epoch the per-sample mean.
    model = deep_sigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    w = vgdiag.watch(model, opt, every=1)
    x, y = data()
    seen: list[tuple[float, int]] = []
    steps: list[list[float]] = []
    for step in range(3):
        opt.zero_grad()
        steps.append([])
        for size in (16, 8):
            start = step * 24 + (0 if size == 16 else 16)
            loss = nn.functional.cross_entropy(model(x[start:start + size]),
                                               y[start:start + size])
            w.observe_loss(loss, samples=size)
            (loss * size / 24).backward()
            seen.append((loss.item(), size))
            steps[-1].append(loss.item())
        opt.step()
    epoch = w.observe_epoch()
    w.close()
    for record, losses in zip(w.history.records(), steps):
        assert record.loss == pytest.approx(sum(losses) / 2, rel=1e-6)
    per_sample = sum(v * n for v, n in seen) / sum(n for _, n in seen)
    assert epoch.train_loss == pytest.approx(per_sample, rel=1e-9)


@pytest.mark.parametrize(("outputs", "num_classes", "warns", "norm"), [
    (4, 10, True, False), (4, 4, False, False), (1, 2, False, False), (4, 0, False, False),
    (10, 10, False, True)])  # a weight-normed head the probe cannot size: no false alarm
def test_num_classes_is_checked_against_the_output_layer(outputs: int, num_classes: int,
                                                         warns: bool, norm: bool) -> None:
    # A stall is read against ln(num_classes): a wrong count makes a wrong verdict.
    import warnings as w_

    torch.manual_seed(0)
    head = nn.Linear(8, outputs)
    if norm:
        with w_.catch_warnings():
            w_.simplefilter("ignore")  # deprecated in favour of parametrizations, still used
            head = nn.utils.weight_norm(head)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), head)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with w_.catch_warnings(record=True) as seen:
        w_.simplefilter("always")
        with vgdiag.watch(model, opt, every=1, num_classes=num_classes) as w:
            for _ in range(3):
                opt.zero_grad()
                model(torch.randn(4, 8)).pow(2).mean().backward()
                opt.step()
        w.findings()
    said = [str(s.message) for s in seen if "num_classes" in str(s.message)]
    assert all(s.filename == __file__ for s in seen if "num_classes" in str(s.message))
    assert said == ([f"vgdiag: num_classes={num_classes}, but the output layer 2 (Linear) "
                     f"has {outputs} outputs: a stalled loss is read against "
                     f"ln({num_classes}); give num_classes={outputs} if the model classifies "
                     "into that many"] if warns else [])
