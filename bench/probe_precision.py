"""How accurate the probe's gradient norms are, against float64, at every layer size.

    python bench/probe_precision.py            # sizes up to 1e8 elements (~1 GB of RAM)
    python bench/probe_precision.py --max 1e7  # smaller

For each size: the relative error of torch's float32 norm (one fused kernel, as the
probe used before) and of the probe's `foreach_norm`, against the float64 norm of the
same float32 tensor; and their times, interleaved (median of --reps, a ratio).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vgdiag.engine.probe_kernels import foreach_norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=float, default=1e8)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [n for n in (10**3, 10**4, 2**16, 2**18, 10**6, 4 * 10**6, 10**7, 10**8)
             if n <= args.max]
    print(f"{'elements':>12} {'torch fp32 err':>15} {'probe err':>10} {'time probe/torch':>17}")
    for n in sizes:
        t = torch.randn(n, generator=torch.Generator().manual_seed(0))
        ref = t.double().norm().item()
        fused = torch._foreach_norm([t])[0].item()
        ours = foreach_norm([t])[0].item()
        ratios = []
        for _ in range(args.reps):  # interleaved: the same load hits both
            t0 = time.perf_counter()
            torch._foreach_norm([t])
            t1 = time.perf_counter()
            foreach_norm([t])
            t2 = time.perf_counter()
            ratios.append((t2 - t1) / (t1 - t0))
        print(f"{n:>12.0e} {abs(fused - ref) / ref:>15.1e} {abs(ours - ref) / ref:>10.1e} "
              f"{statistics.median(ratios):>17.2f}")


if __name__ == "__main__":
    main()
