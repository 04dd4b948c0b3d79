"""VgdiagCallback through Lightning's real Trainer (CPU, a tiny model, seconds).

The module measures its own gradients, updates and losses in its hooks (which
Lightning calls after the callback's), so the folder's numbers are checked against
values computed independently of the probe.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed "
                         "(pip install 'vgdiag[lightning]')")

from vgdiag.integrations.lightning import VgdiagCallback  # noqa: E402
from vgdiag.runs.reader import read_run  # noqa: E402

EPOCHS = 2
BATCHES = 5


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.seen: list[dict[str, float]] = []  # per optimizer step, measured here
        self.val: list[tuple[float, float]] = []
        self._before: torch.Tensor | None = None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.seen.append({"loss": loss.item()})
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        acc = (logits.argmax(1) == y).float().mean()
        self.log("val_loss", loss)
        self.log("val_acc", acc)
        if not self.trainer.sanity_checking:
            self.val.append((loss.item(), acc.item()))

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        layer = self.net[0]
        grad = torch.cat([layer.weight.grad.flatten(), layer.bias.grad.flatten()])
        self.seen[-1]["grad_norm"] = grad.norm().item()
        self._before = torch.cat([layer.weight.flatten(), layer.bias.flatten()]).detach().clone()

    def on_train_batch_end(self, outputs: object, batch: object, idx: int) -> None:
        layer = self.net[0]
        after = torch.cat([layer.weight.flatten(), layer.bias.flatten()]).detach()
        assert self._before is not None
        self.seen[-1]["update_ratio"] = ((after - self._before).norm() / after.norm()).item()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(seed: int) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(BATCHES * 8, 6, generator=g), torch.randint(0, 3, (BATCHES * 8,),
                                                                    generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def test_a_lightning_fit_writes_a_run_folder(tmp_path: Path) -> None:
    module = Tiny()
    callback = VgdiagCallback(tmp_path / "lit", every=2, hist_every=1, num_classes=3)
    trainer = pl.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    trainer.callbacks.append(callback)
    trainer.fit(module, loader(1), loader(2))

    run = read_run(tmp_path / "lit")
    assert run.status == "completed" and callback.watch is not None
    assert run.config["source"] == "lightning"
    assert run.config["experiment"]["model"] == "Tiny"
    assert run.config["experiment"]["optimizer"] == "SGD"
    assert run.config["experiment"]["train"]["lr"] == 0.5
    assert run.config["stages"] == [{"name": "train", "epochs": EPOCHS}]
    assert run.config["steps_per_epoch"] == BATCHES
    assert [li.name for li in run.layers] == ["net.0", "net.2"]
    assert [r.step for r in run.records] == list(range(0, EPOCHS * BATCHES, 2))
    for record in run.records:
        seen = module.seen[record.step]
        stats = record.layers["net.0"]
        assert record.loss == pytest.approx(seen["loss"], rel=1e-6)
        assert stats.grad_norm == pytest.approx(seen["grad_norm"], rel=1e-5)
        assert stats.update_ratio == pytest.approx(seen["update_ratio"], rel=1e-5)
        assert stats.update_ratio > 0
    assert run.records[-1].weight_hist.keys() == {"net.0", "net.2"}
    assert len(run.epochs) == EPOCHS
    for i, epoch in enumerate(run.epochs):
        losses = [s["loss"] for s in module.seen[i * BATCHES:(i + 1) * BATCHES]]
        assert epoch.train_loss == pytest.approx(sum(losses) / BATCHES, rel=1e-6)
        # Lightning logs the mean over the validation batches (all the same size here).
        val = module.val[i * BATCHES:(i + 1) * BATCHES]
        assert epoch.val_loss == pytest.approx(sum(v[0] for v in val) / len(val), rel=1e-5)
        assert epoch.val_acc == pytest.approx(sum(v[1] for v in val) / len(val), rel=1e-5)
    report = subprocess.run([sys.executable, "-m", "vgdiag", "report", str(tmp_path / "lit")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "net.0" in report.stdout
    # The probe is gone: the module is left as it was.
    assert all(not m._forward_hooks for m in module.modules())


def test_a_loss_scaler_is_divided_out_of_what_backward_measured(tmp_path: Path) -> None:
    # 16-mixed's GradScaler: backward runs on the loss times 2^16. Lightning lends no
    # scaler on the CPU, so the plugin is given one, as it is on a GPU.
    from lightning.pytorch.plugins.precision import MixedPrecision

    class Scaled(Tiny):
        def training_step(self, batch, idx):  # type: ignore[no-untyped-def]
            x, y = batch
            logits = self.net(x)
            scale = self.trainer.precision_plugin.scaler.get_scale()
            logits.register_hook(
                lambda g: self.seen[-1].update(out=g.float().norm().item() / scale))
            loss = nn.functional.cross_entropy(logits, y)
            self.seen.append({"loss": loss.item()})
            return loss

    module = Scaled()
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, plugins=[plugin],
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[VgdiagCallback(tmp_path / "lit", every=1)])
    trainer.fit(module, loader(1))
    run = read_run(tmp_path / "lit")
    assert len(run.records) == BATCHES
    for record in run.records:
        seen = module.seen[record.step]
        assert record.layers["net.2"].grad_output_norm == pytest.approx(seen["out"], rel=1e-4)
        assert record.layers["net.0"].grad_norm == pytest.approx(seen["grad_norm"], rel=1e-4)
        assert 1e-3 < seen["out"] < 10  # of the loss itself, not 2^16 times it


def one_epoch(tmp_path: Path) -> pl.Trainer:
    """A quiet one-epoch Trainer on the CPU, recording every step to tmp_path/lit."""
    return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path,
                      callbacks=[VgdiagCallback(tmp_path / "lit", every=1)])


def test_an_exception_in_training_step_marks_the_folder_failed(tmp_path: Path) -> None:
    class Broken(Tiny):
        def training_step(self, batch, idx):  # type: ignore[no-untyped-def]
            if self.global_step == 3:
                raise ValueError("bad batch")
            return super().training_step(batch, idx)

    trainer = one_epoch(tmp_path)
    with pytest.raises(ValueError, match="bad batch"):
        trainer.fit(Broken(), loader(1))
    run = read_run(tmp_path / "lit")
    assert run.status == "failed"
    assert run.summary["error"].startswith("ValueError: bad batch (test_integrations_lightning.py:")
    assert [r.step for r in run.records] == [0, 1, 2]


SIGTERM_SCRIPT = """
import sys, time, torch
import lightning.pytorch as pl
sys.path.insert(0, sys.argv[2])
from test_integrations_lightning import Tiny, loader
from vgdiag.integrations.lightning import VgdiagCallback

class Slow(Tiny):
    def on_train_epoch_end(self):
        print("epoch", flush=True)
        time.sleep(0.05)

trainer = pl.Trainer(max_epochs=10000, accelerator="cpu", logger=False,
                     enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=sys.argv[1],
                     callbacks=[VgdiagCallback(sys.argv[1] + "/lit", every=1)])
trainer.fit(Slow(), loader(1))
"""


def test_sigterm_through_lightnings_own_handler_marks_the_folder_interrupted(
        tmp_path: Path) -> None:
    import signal

    script = tmp_path / "fit.py"
    script.write_text(SIGTERM_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path),
                             str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "epoch"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    run = read_run(tmp_path / "lit")
    assert run.status == "interrupted", (proc.returncode, err[-2000:])
    assert len(run.epochs) >= 1 and len(run.records) >= BATCHES


class TwoOptimizers(Tiny):
    """Manual optimisation with two optimizers, a GAN's shape: one per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch, idx):  # type: ignore[no-untyped-def]
        x, y = batch
        first, second = self.optimizers()
        loss = nn.functional.cross_entropy(self.net(x), y)
        first.zero_grad()
        second.zero_grad()
        self.manual_backward(loss)
        first.step()
        second.step()

    def on_before_optimizer_step(self, optimizer):  # type: ignore[no-untyped-def]
        pass

    def on_train_batch_end(self, outputs, batch, idx):  # type: ignore[no-untyped-def]
        pass

    def configure_optimizers(self):  # type: ignore[no-untyped-def]
        return (torch.optim.SGD(self.net[0].parameters(), lr=0.1),
                torch.optim.SGD(self.net[2].parameters(), lr=0.1))


def test_several_optimizers_are_said_to_be_recorded_as_one_step(tmp_path: Path) -> None:
    trainer = one_epoch(tmp_path)
    with pytest.warns(UserWarning, match="vgdiag: 2 optimizers: each batch is recorded"):
        trainer.fit(TwoOptimizers(), loader(1))
    run = read_run(tmp_path / "lit")
    assert run.status == "completed" and len(run.records) == BATCHES
    assert "non_finite" not in {f.id for f in run.findings}  # no loss returned: not given
