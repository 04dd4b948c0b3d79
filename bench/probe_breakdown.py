"""Where a sampled step's time goes: the probe's parts timed inside a real loop.

    python bench/probe_breakdown.py                 # reference MLP, batch 512, every=1
    python bench/probe_breakdown.py --every 10 --batch-size 64

The probe's methods are wrapped with timers (this script's own patching; the package
is untouched) while the reference MLP trains, and a plain copy of the loop runs
interleaved to give the baseline. Numbers are microseconds per sampled step, wall
clock, with torch.set_num_threads as given.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import vgdiag
import vgdiag.engine.probe as probe_module
import vgdiag.engine.probe_layout as layout_module
from vgdiag.engine.models import build_mlp
from vgdiag.inputs.datasets import load_synthetic

SPENT: dict[str, float] = defaultdict(float)


def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - t0

    return wrapper


def instrument() -> None:
    """Wrap the probe's parts; nested parts are subtracted from their callers below."""
    cls = probe_module.Probe
    for name in ("_arm", "_disarm", "_measure_grads", "_pre_step", "_post_step",
                 "_finish_sample"):
        setattr(cls, name, timed(name, getattr(cls, name)))
    probe_module.assemble = timed("_assemble", probe_module.assemble)  # type: ignore[assignment]
    probe_module.layer_histograms = timed(  # type: ignore[assignment]
        "_histograms", probe_module.layer_histograms)
    layout_module.activation_stats = timed(  # type: ignore[assignment]
        "activation", layout_module.activation_stats)
    layout = layout_module.LayerLayout
    make_hook = layout._layer_hook

    def layer_hook(self: Any, indices: list[int], grad_hooks: bool) -> Callable[..., None]:
        return timed("layer_hook", make_hook(self, indices, grad_hooks))

    layout._layer_hook = layer_hook  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--hist-every", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    instrument()

    data = load_synthetic(42, size=6000)
    x, y = data.train.x, data.train.y  # type: ignore[attr-defined]
    bs = args.batch_size
    batches = [(x[i : i + bs], y[i : i + bs]) for i in range(0, (len(y) // bs) * bs, bs)]
    torch.manual_seed(0)
    base = build_mlp(784, 10)
    plain, probed = copy.deepcopy(base), copy.deepcopy(base)
    opt_plain = torch.optim.SGD(plain.parameters(), lr=0.01)
    opt = torch.optim.SGD(probed.parameters(), lr=0.01)
    w = vgdiag.watch(probed, opt, every=args.every, hist_every=args.hist_every)
    phases: dict[str, dict[str, float]] = {"plain": defaultdict(float),
                                           "probed": defaultdict(float)}

    def step(i: int, model: nn.Module, optimizer: torch.optim.Optimizer, which: str) -> None:
        bx, by = batches[i % len(batches)]
        spent = phases[which]
        optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(bx), by)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        spent["forward"] += t1 - t0
        spent["backward"] += t2 - t1
        spent["optimizer.step"] += t3 - t2

    for i in range(20):  # warm-up
        step(i, plain, opt_plain, "plain")
        step(i, probed, opt, "probed")
    for d in (*phases.values(), SPENT):
        d.clear()
    samples_before = len(w.history)
    for i in range(args.steps):
        step(i, plain, opt_plain, "plain")
        step(i, probed, opt, "probed")
    samples = len(w.history) - samples_before
    w.close()

    us = 1e6 / max(samples, 1)
    parts = dict(SPENT)
    rows = [
        ("forward: activation statistics", parts.get("activation", 0.0)),
        ("forward: layer hooks (output-gradient hooks registered)",
         parts.get("layer_hook", 0.0)),
        ("backward: output-gradient norms (backward time over plain)",
         phases["probed"]["backward"] - phases["plain"]["backward"]),
        ("step: gradient norms (L2 and L1 per parameter)", parts.get("_measure_grads", 0.0)),
        ("step: copy of the weights before the update",
         parts.get("_pre_step", 0.0) - parts.get("_measure_grads", 0.0)
         - parts.get("_disarm", 0.0)),
        ("step: weight/change/update norms, one host copy",
         parts.get("_finish_sample", 0.0) - parts.get("_assemble", 0.0)
         - parts.get("_histograms", 0.0) - parts.get("_reduce_across_ranks", 0.0)),
        ("step: histograms", parts.get("_histograms", 0.0)),
        ("step: building the StepRecord (host side)", parts.get("_assemble", 0.0)),
        ("hooks added and removed", parts.get("_arm", 0.0) + parts.get("_disarm", 0.0)),
    ]
    total_plain = sum(phases["plain"].values())
    total_probed = sum(phases["probed"].values())
    print(f"reference MLP, batch {bs}, every={args.every}, hist_every={args.hist_every}, "
          f"{args.steps} steps ({samples} sampled), torch.set_num_threads({args.threads})")
    print(f"plain step: {total_plain / args.steps * 1e6:8.0f} us "
          + ", ".join(f"{k} {v / args.steps * 1e6:.0f}" for k, v in phases["plain"].items()))
    print(f"probed step: {total_probed / args.steps * 1e6:7.0f} us "
          f"(ratio {total_probed / total_plain:.3f})")
    print(f"\n{'per sampled step':60s} {'us':>8s}")
    for label, seconds in rows:
        print(f"  {label:58s} {seconds * us:8.0f}")
    extra = (total_probed - total_plain) * us
    print(f"  {'total extra time per sampled step':58s} {extra:8.0f}")


if __name__ == "__main__":
    main()
