"""Prove on a GPU that steps the probe does not sample never wait for the device.

    python bench/gpu_sync_check.py            # needs CUDA; says so and exits 0 without

Every unsampled step (zero_grad, forward, loss, backward, optimizer.step) runs under
torch.cuda.set_sync_debug_mode("error"): any host-device synchronisation raises.
Sampled steps run under "warn", and the warnings are counted: a sampled step should
make one host copy (two on histogram steps: the weight range, then the numbers).
The plain loop is checked first, so a sync in the loop itself is not blamed on the
probe. Finally `vgdiag run`'s training loop is run with syncs counted, to show they
scale with sampled steps and epochs, not with steps.
"""

from __future__ import annotations

import argparse
import sys
import threading
import warnings

import torch
from torch import nn

import vgdiag
from vgdiag.engine.models import build_mlp
from vgdiag.inputs.datasets import load_synthetic

SYNC_WARNING = "synchronizing"  # torch's warning text: "called a synchronizing CUDA operation"


def count_syncs(fn) -> int:  # type: ignore[no-untyped-def]
    """Run fn() with sync warnings on; return how many synchronisations it made."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum(SYNC_WARNING in str(w.message) for w in caught)


def no_syncs(fn) -> None:  # type: ignore[no-untyped-def]
    """Run fn(); any synchronisation raises."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--hist-every", type=int, default=2)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("skipped: CUDA is not available here (no GPU or a CPU-only PyTorch build); "
              "run this on a machine with a GPU")
        return 0

    device = torch.device("cuda")
    data = load_synthetic(42, size=6000).to(device)
    x_all, y_all = data.train.x, data.train.y  # type: ignore[attr-defined]
    torch.manual_seed(0)
    model = build_mlp(784, 10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step(i: int, w: vgdiag.Watch | None) -> None:
        x, y = x_all[(i * 512) % 4096 :][:512], y_all[(i * 512) % 4096 :][:512]
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        if w is not None:
            w.observe_loss(loss)
        loss.backward()
        opt.step()

    for i in range(3):  # warm-up: lazy CUDA initialisation may sync once
        step(i, None)
    torch.cuda.synchronize()
    try:
        no_syncs(lambda: step(0, None))
    except RuntimeError as exc:
        print(f"inconclusive: the plain loop itself synchronises ({exc})")
        return 2

    failures = 0
    sampled_syncs = []
    w = vgdiag.watch(model, opt, every=args.every, hist_every=args.hist_every)
    for i in range(args.steps):
        if i % args.every == 0:
            sampled_syncs.append(count_syncs(lambda i=i: step(i, w)))
            continue
        try:
            no_syncs(lambda i=i: step(i, w))
        except RuntimeError as exc:
            failures += 1
            print(f"FAIL: unsampled step {i} synchronised: {exc}")
    w.close()
    torch.cuda.synchronize()
    print(f"unsampled steps: {args.steps - len(sampled_syncs)}, with a sync: {failures}")
    print(f"syncs per sampled step (histograms every {args.hist_every} samples): "
          f"{sampled_syncs}")
    assert len(w.history) == len(sampled_syncs)

    from vgdiag.engine.trainer import run_training
    from vgdiag.inputs.recipe import RunOptions, build_experiment

    opts = RunOptions(data="synthetic", synthetic_size=6000, epochs=2, batch_size=64,
                      device="cuda", every=10, hist_every=10)
    exp = build_experiment(opts, data)
    events: list[object] = []
    n = count_syncs(lambda: events.extend(run_training(exp, data, threading.Event())))
    steps = 2 * data.train.num_batches(64)
    samples = sum(type(e).__name__ == "StepSampled" for e in events)
    print(f"vgdiag run loop: {steps} steps, {samples} sampled, 2 epochs: {n} syncs in all")

    print("PASS" if failures == 0 else "FAIL")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
