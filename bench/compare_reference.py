"""How long `vgdiag compare --preset reference` takes, projected to its full budget.

The target: the 9 variants x 100 epochs x 54,000 images in at most 5 minutes on 2 CPU
cores. Measuring that fairly needs the real FashionMNIST files and an idle machine;
this script runs the preset on the synthetic 28x28 stand-in (same shapes, same split
sizes) for a few epochs, and interleaves it with a plain PyTorch loop over the same
budget so that the ratio stays meaningful on a shared machine. It prints the load
average before and after: figures taken under load say so.

    python bench/compare_reference.py --epochs 2 --jobs 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
from torch import nn

TRAIN, VAL, TEST = 54_000, 6_000, 10_000
VARIANTS = 9
FULL_EPOCHS = 100


def plain_loop(epochs: int) -> float:
    """Seconds of a plain PyTorch loop: the reference MLP, SGD, batch 512, one thread."""
    torch.set_num_threads(1)
    x = torch.rand(TRAIN, 784)
    y = torch.randint(0, 10, (TRAIN,))
    layers: list[nn.Module] = []
    width = 784
    for _ in range(7):
        layers += [nn.Linear(width, 128), nn.Sigmoid()]
        width = 128
    model = nn.Sequential(*layers, nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    t0 = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(TRAIN)
        for start in range(0, TRAIN, 512):
            idx = order[start:start + 512]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return time.perf_counter() - t0


def vgdiag_compare(epochs: int, jobs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "vgdiag", "compare", "--preset", "reference",
             "--data", "synthetic", "--synthetic-size", str(TRAIN + VAL + TEST),
             "--epochs", str(epochs), "--jobs", str(jobs), "--out", f"{out}/cmp"],
            capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        raise SystemExit(f"compare failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()
    # Interleaved: short and long compare runs (their difference removes start-up), and
    # the plain loop between them.
    short = vgdiag_compare(1, args.jobs)
    plain = plain_loop(args.epochs)
    long = vgdiag_compare(1 + args.epochs, args.jobs)
    load_after = os.getloadavg()
    per_epoch_all = (long - short) / args.epochs  # 9 variants, `jobs` at a time
    startup = short - per_epoch_all
    projected = startup + per_epoch_all * FULL_EPOCHS
    plain_full = plain / args.epochs * FULL_EPOCHS * VARIANTS  # sequential, one core
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"compare --preset reference (synthetic stand-in, --jobs {args.jobs}): "
          f"{per_epoch_all:.1f} s per epoch of all {VARIANTS} variants, start-up "
          f"{startup:.1f} s")
    print(f"projected to {FULL_EPOCHS} epochs: {projected / 60:.1f} min (target 5 min)")
    print(f"plain sequential PyTorch loop, same budget: {plain_full / 60:.1f} min; "
          f"vgdiag / plain = {projected / plain_full:.2f}")


if __name__ == "__main__":
    main()
