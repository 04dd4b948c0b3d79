"""What the data check before training costs, against one epoch of training.

    python bench/data_check.py            # FashionMNIST-sized synthetic data, 5 repetitions

vgdiag checks every split held as tensors before training (labels, input shapes,
NaN/inf: vgdiag.inputs.shapecheck.check_shapes). This times that check on 60,000 + 6,000
+ 10,000 images of 28x28 against one epoch of the reference MLP (batch 512, plain SGD)
on the same data, interleaved in one process, and prints the median of the ratios.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from vgdiag.engine.models import build_mlp
from vgdiag.engine.splits import DataBundle, TensorSplit
from vgdiag.inputs.shapecheck import check_shapes


def main(reps: int = 5) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(76_000, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (76_000,), generator=g)
    splits = [TensorSplit(x[a:b], y[a:b]) for a, b in ((0, 54_000), (54_000, 60_000),
                                                       (60_000, 76_000))]
    bundle = DataBundle("synthetic", *splits, 10, (1, 28, 28))
    model = build_mlp(784, 10, depth=7, width=128, activation="sigmoid")
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    train_x, train_y = splits[0].x, splits[0].y

    def epoch() -> None:
        for i in range(0, len(train_x), 512):
            opt.zero_grad()
            nn.functional.cross_entropy(model(train_x[i:i + 512]), train_y[i:i + 512]).backward()
            opt.step()

    checks, epochs = [], []
    for _ in range(reps):
        t = time.perf_counter()
        assert check_shapes(model, bundle, "cross-entropy") == []
        checks.append(time.perf_counter() - t)
        t = time.perf_counter()
        epoch()
        epochs.append(time.perf_counter() - t)
    ratio = statistics.median(c / e for c, e in zip(checks, epochs))
    print(f"data check {statistics.median(checks) * 1e3:.0f} ms, one epoch "
          f"{statistics.median(epochs) * 1e3:.0f} ms: check / epoch {ratio:.3f} "
          f"(median of {reps})")


if __name__ == "__main__":
    main()
