"""Every GPU measurement of vgdiag in one script, one process, one run.

    python bench/gpu_suite.py --json gpu_suite.json     # CUDA: the full suite, < 8 min
    python bench/gpu_suite.py                           # no CUDA: a CPU fallback, seconds

On CUDA it measures:
1. the probe's overhead at the default sampling (every=25, hist_every=10) and at
   every step (every statistic but histograms), on the reference MLP (batch 512) and
   a ResNet-style CNN (batch 128): plain and probed loops alternate, each repetition
   ends with a device synchronisation, the ratio is the median of the pairs;
2. that unsampled steps never wait for the device: each runs under
   torch.cuda.set_sync_debug_mode("error") (a synchronisation raises), sampled steps
   under "warn" with the synchronisations counted;
3. peak memory (torch.cuda.max_memory_allocated) with and without the probe, on both
   models and on a model of 100M parameters (sampled snapshots above 2^20 elements);
4. the wall time of `vgdiag compare` with the reference budget (FashionMNIST-sized
   data, 100 epochs, batch 512, every mitigation), the variants running concurrently
   in `--jobs` processes that share the one GPU, each holding its data on the device.
It prints one markdown table and writes every number as JSON. Each part is guarded:
a part that fails becomes an "error" row and the others still run; a part that would
overrun the time budget is skipped and says so. Without CUDA the same code runs on the
CPU at tiny sizes (tests/test_gpu_suite.py runs it), the sync check excepted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import vgdiag
from vgdiag.engine.models import build_mlp

SYNC_WARNING = "synchronizing"  # torch's warning text: "called a synchronizing CUDA operation"
TARGETS = {"default": 1.03, "every step": 1.25}  # probed / plain time
MEMORY_TARGET = 0.10  # extra peak / parameter bytes on a model above 100M parameters
BUDGET_S = 450.0  # the whole suite on one H100/H200 (the limit it must meet is 8 min)


@dataclass
class Sizes:
    """How big each part is: the CUDA suite, or the CPU fallback (seconds)."""

    mlp_batch: int
    cnn_batch: int
    cnn_image: int
    cnn_width: int  # channels of the first stage (ResNet-18: 64)
    steps: int  # per timed repetition
    reps: int  # alternating plain/probed pairs
    big_blocks: int  # Linear(2048, 2048) blocks of the memory model
    compare_args: list[str]
    compare_jobs: int

    @classmethod
    def cuda(cls) -> Sizes:
        return cls(512, 128, 32, 64, 100, 9, 24,
                   ["--data", "synthetic", "--synthetic-size", "60000", "--epochs", "100",
                    "--batch-size", "512"], 8)

    @classmethod
    def cpu(cls) -> Sizes:
        return cls(64, 4, 16, 8, 4, 2, 0,
                   ["--data", "synthetic", "--synthetic-size", "200", "--epochs", "1",
                    "--batch-size", "50", "--depth", "3", "--width", "16",
                    "--plugins", "relu", "--threads", "1"], 2)


@dataclass
class Row:
    part: str
    model: str
    measure: str
    value: str
    target: str = ""
    verdict: str = ""  # ok | MISSED | PASS | FAIL | skipped | error | ""
    numbers: dict[str, Any] = field(default_factory=dict)


# ----- models -----------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convolutions with batch norm, and the skip."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)) if stride != 1 or cin != cout
                     else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.down(x))


def resnet(width: int = 64) -> nn.Module:
    """ResNet-18's layout (2 basic blocks per stage, 4 stages) for 3-channel images."""
    stages: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(width), nn.ReLU()]
    cin = width
    for scale, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        cout = width * scale
        stages += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    stages += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*stages)


def big_model(blocks: int) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(blocks):
        layers += [nn.Linear(2048, 2048), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def workloads(sizes: Sizes, device: torch.device) -> list[Workload]:
    g = torch.Generator(device="cpu").manual_seed(0)
    mlp_x = torch.rand(sizes.mlp_batch, 1, 28, 28, generator=g)
    cnn_x = torch.rand(sizes.cnn_batch, 3, sizes.cnn_image, sizes.cnn_image, generator=g)
    ce = nn.functional.cross_entropy
    return [
        Workload("reference MLP", lambda: build_mlp(784, 10, depth=7, width=128,
                                                    activation="sigmoid"),
                 mlp_x.to(device), torch.randint(0, 10, (sizes.mlp_batch,), generator=g)
                 .to(device), ce),
        Workload("ResNet-18-style CNN", lambda: resnet(sizes.cnn_width), cnn_x.to(device),
                 torch.randint(0, 10, (sizes.cnn_batch,), generator=g).to(device), ce),
    ]


class Loop:
    """One training loop on fixed data: its own model copy, optimizer and maybe a probe."""

    def __init__(self, work: Workload, base: nn.Module, probe: dict[str, int] | None) -> None:
        self.work = work
        self.model = copy.deepcopy(base)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.watch = vgdiag.watch(self.model, self.opt, **probe) if probe is not None else None

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = self.work.loss(self.model(self.work.x), self.work.y)
        if self.watch is not None:
            self.watch.observe_loss(loss)
        loss.backward()
        self.opt.step()

    def run(self, steps: int, device: torch.device) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(device)
        return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----- parts ------------------------------------------------------------------------------


def overhead(sizes: Sizes, device: torch.device) -> Iterator[Row]:
    """Probed / plain step time, interleaved, per model and sampling."""
    for work in workloads(sizes, device):
        torch.manual_seed(0)
        base = work.build().to(device)
        loops = {"plain": Loop(work, base, None),
                 "default": Loop(work, base, {}),
                 "every step": Loop(work, base, {"every": 1, "hist_every": 0})}
        for loop in loops.values():  # warm-up: kernels chosen, memory pools filled
            loop.run(max(3, sizes.steps // 5), device)
        times: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(sizes.reps):
            for name, loop in loops.items():
                times[name].append(loop.run(sizes.steps, device))
        plain_ms = 1e3 * statistics.median(times["plain"]) / sizes.steps
        for name in ("default", "every step"):
            ratios = [t / p for t, p in zip(times[name], times["plain"])]
            ratio = statistics.median(ratios)
            target = TARGETS[name]
            yield Row("overhead", work.name, f"{name} sampling / plain step",
                      f"{ratio:.3f}x (plain {plain_ms:.2f} ms/step)", f"<= {target}",
                      "ok" if ratio <= target else "MISSED",
                      {"ratio": ratio, "ratios": ratios, "plain_ms": plain_ms,
                       "batch": int(work.x.shape[0])})
        for loop in loops.values():
            if loop.watch is not None:
                loop.watch.close()


def no_sync_on_unsampled_steps(sizes: Sizes, device: torch.device) -> Iterator[Row]:
    if device.type != "cuda":
        yield Row("host sync", "reference MLP", "unsampled steps that synchronise",
                  "n/a", "0", "skipped", {"reason": "no CUDA: nothing to synchronise with"})
        return
    work = workloads(sizes, device)[0]
    torch.manual_seed(0)
    loop = Loop(work, work.build().to(device), None)
    loop.run(3, device)
    with sync_mode("error"):
        loop.step()  # the plain loop itself must not synchronise, or the test says nothing
    sync(device)
    every, hist_every, steps = 5, 2, 60
    loop.watch = vgdiag.watch(loop.model, loop.opt, every=every, hist_every=hist_every)
    failures: list[str] = []
    counted: list[int] = []
    for i in range(steps):
        if i % every == 0:
            with warnings.catch_warnings(record=True) as caught, sync_mode("warn"):
                warnings.simplefilter("always")
                loop.step()
            counted.append(sum(SYNC_WARNING in str(w.message) for w in caught))
            continue
        try:
            with sync_mode("error"):
                loop.step()
        except RuntimeError as exc:
            failures.append(f"step {i}: {str(exc).splitlines()[0]}")
    loop.watch.close()
    yield Row("host sync", work.name, f"unsampled steps that synchronise (of "
              f"{steps - len(counted)})", str(len(failures)), "0",
              "PASS" if not failures else "FAIL", {"failures": failures[:5]})
    yield Row("host sync", work.name, "syncs per sampled step (histograms every 2nd)",
              " ".join(map(str, counted)), "1, 2 on histogram steps", "",
              {"per_sampled_step": counted})


@contextlib.contextmanager
def sync_mode(mode: str) -> Iterator[None]:
    torch.cuda.set_sync_debug_mode(mode)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def memory(sizes: Sizes, device: torch.device) -> Iterator[Row]:
    """Peak memory of a training loop without, then with, the probe (every step)."""
    models = [(w.name, w) for w in workloads(sizes, device)]
    if sizes.big_blocks:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(16, 2048, generator=g).to(device)
        big = Workload(f"{sizes.big_blocks} x Linear(2048, 2048)",
                       lambda: big_model(sizes.big_blocks), x, x.clone(),
                       nn.functional.mse_loss)
        models.append((big.name, big))
    for name, work in models:
        torch.manual_seed(0)
        loop = Loop(work, work.build().to(device), None)
        del_base = loop.model  # the loop holds the only copy that trains
        params = sum(p.numel() * p.element_size() for p in del_base.parameters())
        loop.run(3, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loop.run(3, device)
        plain = peak_bytes(device)
        loop.watch = vgdiag.watch(loop.model, loop.opt, every=1, hist_every=1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        loop.run(3, device)
        probed = peak_bytes(device)
        snapshot = loop.watch.probe.snapshot_bytes()
        loop.watch.close()
        extra = probed - plain
        share = extra / params
        numel = sum(p.numel() for p in loop.model.parameters())
        big = numel > 100_000_000
        kind = ("peak max_memory_allocated" if device.type == "cuda"
                else "peak RSS (in-process: coarse)")
        yield Row("memory", name, f"{kind}: plain -> probed (every step, histograms)",
                  f"{plain / 2**20:.0f} -> {probed / 2**20:.0f} MB (+{share:.1%} of "
                  f"{params / 2**20:.0f} MB parameters)",
                  f"<= {MEMORY_TARGET:.0%}" if big else "",
                  ("ok" if share <= MEMORY_TARGET else "MISSED") if big else "",
                  {"plain": plain, "probed": probed, "params": params, "numel": numel,
                   "snapshot_bytes": snapshot})
        del loop
        if device.type == "cuda":
            torch.cuda.empty_cache()


def compare_wall_time(sizes: Sizes, device: torch.device, left_s: float) -> Iterator[Row]:
    """`vgdiag compare` end to end, variants concurrent on the one device."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "compare"
        cmd = [sys.executable, "-m", "vgdiag", "compare", *sizes.compare_args,
               "--jobs", str(sizes.compare_jobs), "--device", device.type, "--out", str(out)]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=left_s)
        except subprocess.TimeoutExpired:
            yield Row("compare", "reference budget", "wall time", f"> {left_s:.0f} s",
                      "<= 60 s on one H200", "skipped", {"reason": "ran out of the budget"})
            return
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"compare exited {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-500:]}")
        result = json.loads((out / "compare.json").read_text())
    variants = result.get("variants", [])
    per_variant = {v.get("plugin"): v.get("seconds") for v in variants}
    variants = [result.get("baseline"), *variants]
    on_cuda = device.type == "cuda"
    yield Row("compare", "reference budget" if on_cuda else "tiny budget (CPU fallback)",
              f"wall time, {len(variants)} variants, --jobs {sizes.compare_jobs}",
              f"{seconds:.1f} s", "<= 60 s on one H200" if on_cuda else "",
              ("ok" if seconds <= 60 else "MISSED") if on_cuda else "",
              {"seconds": seconds, "command": " ".join(cmd[1:]),
               "variant_seconds": per_variant})


# ----- the run ------------------------------------------------------------------------------


def markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| part | model | measure | value | target | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.part} | {r.model} | {r.measure} | {r.value} | {r.target} | "
                     f"{r.verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("gpu_suite.json"),
                        help="where to write every number")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help="seconds for the whole suite; parts that would overrun skip")
    parser.add_argument("--cpu", action="store_true", help="the CPU fallback even with CUDA")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    sizes = Sizes.cuda() if cuda else Sizes.cpu()
    if not cuda:
        torch.set_num_threads(1)  # tiny kernels: threads only add noise
    where = (torch.cuda.get_device_name(device) if cuda else
             f"CPU fallback (no CUDA), {os.cpu_count()} cores, tiny sizes")
    header = (f"vgdiag {vgdiag.__version__} GPU suite on {where}; torch {torch.__version__}, "
              f"Python {platform.python_version()}")
    print(header, flush=True)
    rows: list[Row] = []
    parts: list[tuple[str, Callable[[], Iterator[Row]], float]] = [
        # (name, part, seconds it needs at most on an H200: skipped if fewer are left)
        ("host sync", lambda: no_sync_on_unsampled_steps(sizes, device), 20),
        ("overhead", lambda: overhead(sizes, device), 90),
        ("memory", lambda: memory(sizes, device), 40),
        ("compare", lambda: compare_wall_time(sizes, device, left()), 60),
    ]

    def left() -> float:
        return args.budget - (time.perf_counter() - started)

    for name, part, need in parts:
        if cuda and left() < need:
            rows.append(Row(name, "", "", "", "", "skipped",
                            {"reason": f"{left():.0f} s of the budget left, needs {need:.0f}"}))
            continue
        t0 = time.perf_counter()
        try:
            for row in part():
                rows.append(row)
                print(f"  {row.part}: {row.model}: {row.measure}: {row.value} {row.verdict}",
                      flush=True)
        except Exception as exc:  # one broken part must not hide the others' numbers
            rows.append(Row(name, "", "error", f"{type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}", "", "error",
                            {"traceback": traceback.format_exc()}))
            print(rows[-1].numbers["traceback"], file=sys.stderr)
        print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
    total = time.perf_counter() - started
    table = markdown(rows, f"{header}; {total:.0f} s in all")
    print("\n" + table)
    report = {"device": where, "cuda": cuda, "torch": torch.__version__,
              "vgdiag": vgdiag.__version__, "seconds": total,
              "rows": [asdict(r) for r in rows]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nwrote {args.json}")
    return 1 if any(r.verdict == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
