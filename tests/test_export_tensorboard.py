"""`vgdiag export RUN_DIR --tensorboard DIR`, read back with TensorBoard's event reader."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed "
                    "(pip install 'vgdiag[tensorboard]')")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

import vgdiag  # noqa: E402
from vgdiag.errors import UserError  # noqa: E402
from vgdiag.runs.export_tb import export_tensorboard  # noqa: E402
from vgdiag.runs.reader import read_run  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 6, generator=g), torch.randint(0, 3, (40,), generator=g)
    with vgdiag.watch(model, opt, out=out, every=1, hist_every=2, num_classes=3) as w:
        for _ in range(2):
            for i in range(0, 40, 8):
                opt.zero_grad()
                loss = nn.functional.cross_entropy(model(x[i:i + 8]), y[i:i + 8])
                w.observe_loss(loss)
                loss.backward()
                opt.step()
            w.observe_epoch(val_loss=1.5, val_acc=0.25)
    return out


def read_events(log_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0,
                                                           "tensors": 0})
    events.Reload()
    return events


def test_the_export_reads_back_with_tensorboards_reader(run_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vgdiag", "export", str(run_dir),
                           "--tensorboard", str(tmp_path / "tb")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote ") and str(tmp_path / "tb") in done.stdout
    run = read_run(run_dir)
    events = read_events(tmp_path / "tb")
    tags = events.Tags()
    assert [r.step for r in run.records] == list(range(10))

    for layer in ("0", "2"):
        for key in ("grad_norm", "update_ratio", "weight_change", "weight_norm"):
            points = events.Scalars(f"{key}/{layer}")
            assert [p.step for p in points] == [r.step for r in run.records]
            assert [p.value for p in points] == pytest.approx(
                [getattr(r.layers[layer], key) for r in run.records], rel=1e-6)
    # Measured where there is an activation; never written as a number where not.
    assert "act_saturated/0" in tags["scalars"] and "act_saturated/2" not in tags["scalars"]
    assert [p.value for p in events.Scalars("loss/train_step")] == pytest.approx(
        [r.loss for r in run.records], rel=1e-6)
    train = events.Scalars("loss/train")
    assert [(p.step, p.value) for p in train] == [
        (e.steps, pytest.approx(e.train_loss, rel=1e-6)) for e in run.epochs]
    assert [p.value for p in events.Scalars("accuracy/val")] == pytest.approx([0.25, 0.25])
    assert "accuracy/train" not in tags["scalars"]  # the loop never gave it

    hist_steps = [r.step for r in run.records if r.weight_hist]
    assert hist_steps == [0, 2, 4, 6, 8]
    for prefix, attr in (("weights", "weight_hist"), ("log10_abs_grad", "grad_hist")):
        for layer in ("0", "2"):
            saved = [getattr(r, attr)[layer] for r in run.records if getattr(r, attr)]
            read = events.Histograms(f"{prefix}/{layer}")
            assert [h.step for h in read] == hist_steps
            for h, s in zip(read, saved):
                # the occupied bins only: TensorBoard draws the range it is given
                full = s.counts.tolist()
                held = [i for i, c in enumerate(full) if c]
                a, b = held[0], held[-1]
                assert h.histogram_value.bucket == pytest.approx(full[a:b + 1])
                assert h.histogram_value.bucket_limit == pytest.approx(
                    s.edges()[a + 1:b + 2].tolist(), rel=1e-6)
                assert h.histogram_value.min == pytest.approx(s.edges()[a])
                assert h.histogram_value.max == pytest.approx(s.edges()[b + 1])
                assert h.histogram_value.num == s.counts.sum()
                if prefix == "log10_abs_grad":
                    assert h.histogram_value.min > -16.0  # not the fixed axis's end
    # A weight histogram counts every element of the layer's weight.
    assert events.Histograms("weights/0")[0].histogram_value.num == 6 * 8


def test_a_second_export_into_the_same_folder_is_refused(run_dir: Path,
                                                         tmp_path: Path) -> None:
    export_tensorboard(read_run(run_dir), tmp_path / "tb")
    again = subprocess.run([sys.executable, "-m", "vgdiag", "export", str(run_dir),
                            "--tensorboard", str(tmp_path / "tb")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "already holds TensorBoard event files" in \
        again.stderr
    assert len(list((tmp_path / "tb").iterdir())) == 1


def test_without_a_target_or_the_extra_the_user_is_told(run_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    done = subprocess.run([sys.executable, "-m", "vgdiag", "export", str(run_dir)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--tensorboard" in done.stderr and "Traceback" not in \
        done.stderr
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'vgdiag\[tensorboard\]'"):
        export_tensorboard(read_run(run_dir), tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_values_not_measured_are_left_out(tmp_path: Path) -> None:
    run = read_run(_folder_without_losses(tmp_path / "run"))
    done = export_tensorboard(run, tmp_path / "tb")
    tags = read_events(tmp_path / "tb").Tags()["scalars"]
    assert not any(t.startswith("loss/") for t in tags)
    assert done.series == len(tags) and done.histograms == 0
    assert all(math.isfinite(p.value) for t in tags
               for p in read_events(tmp_path / "tb").Scalars(t))


def _folder_without_losses(out: Path) -> Path:
    model = nn.Sequential(nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with vgdiag.watch(model, opt, out=out, every=1, hist_every=0):
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(2, 4)).pow(2).mean().backward()
            opt.step()
    assert np.isnan(read_run(out).records[0].loss)
    return out
