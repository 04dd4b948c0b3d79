"""vgdiag.watch in your own training loop, writing a run folder.

    python examples/watch_loop.py --out runs/own-loop
    vgdiag report runs/own-loop          # findings, layer table (or --format html)
    vgdiag view runs/own-loop            # the dashboard, replayed
    vgdiag export runs/own-loop --tensorboard tb/own-loop

The model is the reference's deep sigmoid MLP, on scikit-learn's bundled digits (no
download): its gradient vanishes toward the input, and the report says so.
"""

from __future__ import annotations

import argparse

import torch
from sklearn.datasets import load_digits
from torch import nn

import vgdiag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/own-loop", help="the run folder (new or empty)")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1500], order[1500:]

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    width = 64
    for _ in range(7):
        layers += [nn.Linear(width, 128), nn.Sigmoid()]
        width = 128
    model = nn.Sequential(*layers, nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    with vgdiag.watch(model, optimizer, out=args.out, every=10, num_classes=10,
                      hparams={"batch_size": 32, "epochs": args.epochs}) as w:
        for _ in range(args.epochs):
            for start in range(0, len(train), 32):
                idx = train[start:start + 32]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                w.observe_loss(loss)  # the epoch's train_loss is the mean of these
                loss.backward()
                optimizer.step()  # marks the step boundary
            with torch.no_grad():
                logits = model(x[val])
                w.observe_epoch(val_loss=nn.functional.cross_entropy(logits, y[val]).item(),
                                val_acc=(logits.argmax(1) == y[val]).float().mean().item())

    for finding in w.findings():
        print(f"[{finding.severity}] {finding.id}: {finding.message}")
    print(f"run folder: {w.out}  (vgdiag report {w.out})")


if __name__ == "__main__":
    main()
