"""vgdiag in a Lightning Trainer: one callback, a run folder.

    pip install 'vgdiag[lightning]'
    python examples/lightning_callback.py --out runs/lightning
    vgdiag report runs/lightning         # or: vgdiag view runs/lightning

The deep sigmoid MLP of the reference on scikit-learn's bundled digits (no download).
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vgdiag.integrations.lightning import VgdiagCallback


class DeepSigmoid(pl.LightningModule):
    def __init__(self, lr: float = 0.1, depth: int = 7) -> None:
        super().__init__()
        self.save_hyperparameters()  # recorded in the run folder's config.json
        layers: list[nn.Module] = []
        width = 64
        for _ in range(depth):
            layers += [nn.Linear(width, 128), nn.Sigmoid()]
            width = 128
        self.net = nn.Sequential(*layers, nn.Linear(128, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", nn.functional.cross_entropy(logits, y))  # read by the callback
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/lightning", help="the run folder (new or empty)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    digits = load_digits()
    data = TensorDataset(torch.tensor(digits.data, dtype=torch.float32) / 16,
                         torch.tensor(digits.target))
    train, val = torch.utils.data.random_split(data, [1500, len(data) - 1500],
                                               generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[VgdiagCallback(args.out, every=10, num_classes=10)])
    trainer.fit(DeepSigmoid(), DataLoader(train, batch_size=32, shuffle=True),
                DataLoader(val, batch_size=256))
    print(f"run folder: {args.out}  (vgdiag report {args.out})")


if __name__ == "__main__":
    main()
