"""The probe on a torch.compile'd model: unsampled steps against the plain compiled loop.

    python bench/compile_overhead.py                      # inductor, the reference MLP
    python bench/compile_overhead.py --backend aot_eager --batch-size 64 --reps 11

A compiled model's sampled steps run eager (vgdiag/engine/probe_compile.py), so the
graph Dynamo compiles holds no hook and every unsampled step runs it whole. Three
loops, each with its own copy of one model and its own torch.compile, fed the same
batches: plain, watched at the default rate, and watched with no step but the first
sampled. Each repetition times all three (process CPU time) in a rotating order;
printed: ms per step and each watched loop's ratio to the plain one (median and IQR
over repetitions), and how many graphs Dynamo made and how often it broke one.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from probe_overhead import build_mlp, make_batches, quartiles  # noqa: E402

import vgdiag  # noqa: E402

VARIANTS = {"plain": None, "default sampling": {},
            "unsampled only (every=10^9)": {"every": 10**9}}


def own_forward(inner: nn.Module, tag: int) -> nn.Module:
    """`inner` behind a forward whose code object is this loop's alone: Dynamo keeps
    its compiled graphs per code object, so loops sharing one would share a graph,
    the one traced first (with or without the probe's hooks)."""
    namespace: dict = {}
    exec(f"def forward(self, x):  # loop {tag}\n    return self.inner(x)\n", namespace)
    wrapper = type(f"Loop{tag}", (nn.Module,), {"forward": namespace["forward"]})()
    wrapper.inner = inner
    return wrapper


class CompiledLoop:
    def __init__(self, base: nn.Module, batches: list, watch: dict | None,
                 backend: str, tag: int) -> None:
        self.model = own_forward(copy.deepcopy(base), tag)
        self.compiled = torch.compile(self.model, backend=backend)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.batches = batches
        self.watch = None if watch is None else vgdiag.watch(self.compiled, self.opt, **watch)
        self.i = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            self.opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(self.compiled(x), y)
            if self.watch is not None:
                self.watch.observe_loss(loss)
            loss.backward()
            self.opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100, help="steps per repetition")
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    base = build_mlp()
    batches = make_batches(torch.device("cpu"), args.batch_size)
    loops = {name: CompiledLoop(base, batches, kw, args.backend, tag)
             for tag, (name, kw) in enumerate(VARIANTS.items())}
    start = time.perf_counter()
    for loop in loops.values():  # compile, and pass the default rate's first 50 steps
        loop.run(60)
    print(f"compiled and warmed up in {time.perf_counter() - start:.1f} s; Dynamo: "
          f"{counters['stats']['unique_graphs']} graph(s), "
          f"{sum(counters['graph_break'].values())} graph break(s)")
    times: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for rep in range(args.reps):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            t = time.process_time()
            loops[name].run(args.steps)
            times[name].append(time.process_time() - t)
    plain = times["plain"]
    print(f"\nreference MLP compiled ({args.backend}), batch {args.batch_size}, "
          f"{args.steps} steps x {args.reps} repetitions, {args.threads} thread(s)\n")
    print(f"{'variant':32} {'ms/step':>8} {'ratio':>7}  IQR")
    for name, values in times.items():
        ratios = [v / p for v, p in zip(values, plain)]
        lo, mid, hi = quartiles(ratios)
        ms = 1000 * statistics.median(values) / args.steps
        print(f"{name:32} {ms:8.2f} {mid:7.3f}  {lo:.3f}-{hi:.3f}")
    print(f"\nDynamo in all: {counters['stats']['unique_graphs']} graph(s), "
          f"{sum(counters['graph_break'].values())} graph break(s)")
    for loop in loops.values():
        if loop.watch is not None:
            loop.watch.close()


if __name__ == "__main__":
    main()
