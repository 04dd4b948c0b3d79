"""The probe's extra memory on a model above 100M parameters, and the sampled estimator's error.

    python bench/probe_memory.py                 # CPU: peak RSS; CUDA: max_memory_allocated
    python bench/probe_memory.py --markdown

Memory: each variant runs in a fresh process. It trains the model a few plain steps
(its own peak comes first), then attaches `vgdiag.watch` and trains on; the extra is
the increase of the peak (VmHWM on the CPU, with glibc told to hand freed memory back
at once, or torch.cuda.max_memory_allocated), against the model's parameter bytes.
Every step is sampled with histograms (the worst case), and once more with the
default sampling; "exact copies" is the probe with no sampled snapshots (every
parameter copied whole), for comparison.

Error: ||W - W0|| and ||dW|| estimated from the sampled snapshot of a 10^7-element
layer against the exact value, over several seeds and kinds of change.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

BLOCKS, WIDTH, BATCH = 24, 2048, 16  # 24 x Linear(2048, 2048): 100.7M parameters
VARIANTS = {
    "plain loop": None,
    "probe, every step, histograms every step": {"every": 1, "hist_every": 1},
    "probe, default sampling (every=25, hist_every=10)": {},
    "probe, every step, exact copies (no sampling)": {"every": 1, "hist_every": 1,
                                                       "snapshot_threshold": 2**62},
}
TARGET = 0.10  # extra peak / parameter bytes, for models above 100M parameters


def build() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(BLOCKS):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def peak(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no /proc/self/status: peak RSS is measured on Linux")


def child(variant: str, steps: int, device: torch.device) -> dict[str, float]:
    import vgdiag

    torch.manual_seed(0)
    model = build().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, WIDTH, device=device)
    y = torch.randn(BATCH, WIDTH, device=device)

    def train(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / n

    train(3)
    start = peak(device)
    kwargs = VARIANTS[variant]
    w = vgdiag.watch(model, opt, **kwargs) if kwargs is not None else None
    seconds = train(steps)
    end = peak(device)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    snapshot = w.probe.snapshot_bytes() if w is not None else 0
    return {"extra": end - start, "params": params, "numel": sum(p.numel() for p in
                                                                 model.parameters()),
            "snapshot": snapshot, "s_per_step": seconds,
            "records": len(w.history) if w is not None else 0}


def estimator_errors(seeds: int) -> dict[str, list[float]]:
    """Relative error of the sampled ||W - W0|| on a 3200 x 3125 weight (10^7 elements)."""
    from vgdiag.engine.snapshots import Snapshots

    out: dict[str, list[float]] = {}
    for kind in ("sgd step", "gaussian drift", "rows at rates 1e-4..1e-2", "sparse rows (1%)"):
        errors = []
        for seed in range(seeds):
            gen = torch.Generator().manual_seed(seed)
            w0 = torch.randn(3200, 3125, generator=gen) * 0.02
            snaps = Snapshots([w0], seed=1000 + seed)
            if kind == "sgd step":
                x = torch.randn(32, 3125, generator=gen)
                g = torch.randn(32, 3200, generator=gen).T @ x / 32
                d = -0.1 * g
            elif kind == "gaussian drift":
                d = 1e-3 * torch.randn(w0.shape, generator=gen)
            elif kind == "sparse rows (1%)":
                d = torch.zeros_like(w0)
                rows = torch.randperm(3200, generator=gen)[:32]
                d[rows] = 1e-3 * torch.randn(32, 3125, generator=gen)
            else:
                d = torch.logspace(-4, -2, 3200).unsqueeze(1) * torch.randn(w0.shape,
                                                                            generator=gen)
            w = w0 + d
            est = float(snaps.change_norms([w])[0])
            exact = float(d.double().norm())
            errors.append(abs(est / exact - 1))
        out[kind] = errors
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(child(args.child, args.steps, device)))
        return

    started = time.perf_counter()
    rows = {}
    for variant in VARIANTS:
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
        cmd = [sys.executable, __file__, "--child", variant, "--steps", str(args.steps),
               "--threads", str(args.threads), "--device", args.device]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        r = rows[variant]
        print(f"{variant:52s} extra {r['extra'] / 2**20:8.1f} MB = "
              f"{r['extra'] / r['params']:6.1%} of the parameters "
              f"(snapshots {r['snapshot'] / 2**20:.1f} MB), {r['s_per_step']:.2f} s/step")
    errors = estimator_errors(args.seeds)
    for kind, values in errors.items():
        print(f"sampled ||W - W0|| on 10^7 elements, {kind:26s}: "
              f"median {statistics.median(values):.3%}, max {max(values):.3%} "
              f"over {len(values)} seeds")
    first = next(iter(rows.values()))
    kind = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU, {os.cpu_count()} cores, {args.threads} threads"
    if args.markdown:
        print(f"\n**Probe memory: {BLOCKS} x Linear({WIDTH}, {WIDTH}), "
              f"{first['numel'] / 1e6:.1f}M parameters ({first['params'] / 2**20:.0f} MB), "
              f"batch {BATCH}, {args.steps} steps, {where}; extra {kind}**\n")
        print("| variant | extra MB | of the parameters | target | snapshots MB |")
        print("|---|---:|---:|---|---:|")
        for variant, r in rows.items():
            share = r["extra"] / r["params"]
            target = "" if "exact" in variant or r is first else (
                f"<= {TARGET:.0%} ({'ok' if share <= TARGET else 'MISSED'})")
            print(f"| {variant} | {r['extra'] / 2**20:+.1f} | {share:.1%} | {target} | "
                  f"{r['snapshot'] / 2**20:.1f} |")
        print(f"\n**Sampled ||W - W0|| on a 3200 x 3125 weight (10^7 elements, "
              f"{args.seeds} seeds): relative error**\n")
        print("| change | median | max |")
        print("|---|---:|---:|")
        for kind_name, values in errors.items():
            print(f"| {kind_name} | {statistics.median(values):.3%} | {max(values):.3%} |")
    if args.json:
        args.json.write_text(json.dumps({"memory": rows, "errors": errors}, indent=2))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
