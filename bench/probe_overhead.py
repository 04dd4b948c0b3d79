"""What the probe costs: a plain PyTorch loop against the same loop under vgdiag.

    python bench/probe_overhead.py              # ~2-3 minutes on 2 CPU cores
    python bench/probe_overhead.py --markdown   # also print the tables as markdown
    python bench/probe_overhead.py --reps 40    # tighter medians

Every configuration is timed INTERLEAVED in one process: one repetition runs each
variant once (plain, then each probe setting, in an order that rotates between
repetitions), so a change in machine load hits all of them alike. Each variant has its
own copy of the same initial model and sees the same batches in the same order (the
probe is bit-for-bit neutral), so all of them do identical arithmetic. The figure
reported is the median over repetitions of (variant time / plain time in the same
repetition), with the interquartile range of that ratio.

Peak memory on the CPU is measured in child processes, one per variant: the increase
of the process's peak resident set size (VmHWM) over a plain warm-up of the same
loop, with glibc told to hand freed memory back at once. That counts everything the
process touched (the probe's tensors, its Python objects, code loaded on first use),
so it is an upper bound on what the probe holds. On CUDA it is
torch.cuda.max_memory_allocated over the same loop, which counts tensors only.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import vgdiag
from vgdiag.engine.models import build_mlp as _build_mlp
from vgdiag.engine.splits import Split
from vgdiag.inputs.datasets import load_synthetic

# (label, vgdiag.watch keyword arguments); None is the plain loop.
VARIANTS: list[tuple[str, dict[str, int] | None]] = [
    ("plain", None),
    ("every=1, no histograms", {"every": 1, "hist_every": 0}),
    ("every=1, histograms every 10th step", {"every": 1, "hist_every": 10}),
    ("every=10, no histograms", {"every": 10, "hist_every": 0}),
    ("every=10, hist_every=10", {"every": 10, "hist_every": 10}),
    ("every=25, hist_every=10 (default)", {"every": 25, "hist_every": 10}),
]
# Targets on a 2-core CPU, by variant label (probe time / plain time).
# The default row includes histograms, so it is held to the stricter of the two
# targets for the default (1.03 without histograms, 1.05 with them).
TARGETS = {
    "every=1, no histograms": 1.25,
    "every=25, hist_every=10 (default)": 1.03,
}
TRAINER_TARGET = 0.95  # vgdiag run's steps/s over a plain loop's


def build_mlp() -> nn.Module:
    """The reference model: Flatten -> 7 x [Linear -> Sigmoid] -> Linear(128, 10)."""
    return _build_mlp(784, 10, depth=7, width=128, activation="sigmoid")


def build_conv() -> nn.Module:
    """A small conv net on 1x28x28: three Conv2d+ReLU, then a Linear classifier."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


class FunctionalConv(nn.Module):
    """The conv net with its ReLUs called in forward (F.relu): the probe watches
    those calls through a TorchFunctionMode on sampled steps (probe_functional)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu(self.c3(nn.functional.relu(self.c2(nn.functional.relu(self.c1(x))))))
        return self.fc(x.flatten(1))


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    batch_size: int
    steps: int  # optimizer steps per repetition
    description: str


WORKLOADS = {
    "mlp": Workload("mlp", build_mlp, 512, 100,
                    "reference MLP (7 x Linear(128)+Sigmoid), batch 512"),
    "conv": Workload("conv", build_conv, 128, 50,
                     "conv net (3 x Conv2d+ReLU, Linear), batch 128"),
    "convf": Workload("convf", FunctionalConv, 128, 50,
                      "conv net with F.relu in forward, batch 128"),
}


class Loop:
    """One variant: its own model, optimizer and (optionally) watch, fed fixed batches."""

    def __init__(self, base: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
                 kwargs: dict[str, int] | None) -> None:
        self.model = copy.deepcopy(base)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.batches = batches
        self.watch = vgdiag.watch(self.model, self.opt, **kwargs) if kwargs is not None else None
        self.i = 0

    def run(self, steps: int) -> None:
        model, opt, w, loss_fn = self.model, self.opt, self.watch, nn.functional.cross_entropy
        for _ in range(steps):
            x, y = self.batches[self.i % len(self.batches)]
            self.i += 1
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            if w is not None:
                w.observe_loss(loss)
            loss.backward()
            opt.step()


def make_batches(device: torch.device, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = load_synthetic(42, size=6000).to(device)
    x, y = data.train.x, data.train.y  # type: ignore[attr-defined]
    n = (len(y) // batch_size) * batch_size
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Row:
    label: str
    ms_per_step: float
    ratio: float
    q1: float
    q3: float
    target: float | None = None
    peak_mb: float | None = None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "ok" if self.ratio <= self.target else "MISSED"


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 4:
        m = statistics.median(values)
        return min(values), m, max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[1], q[2]


def time_workload(work: Workload, device: torch.device, reps: int, warmup: int) -> Table:
    torch.manual_seed(0)
    base = work.build().to(device)
    batches = make_batches(device, work.batch_size)
    loops = [(label, Loop(base, batches, kwargs)) for label, kwargs in VARIANTS]
    times: dict[str, list[float]] = {label: [] for label, _ in VARIANTS}
    for rep in range(warmup + reps):
        k = rep % len(loops)
        for label, loop in loops[k:] + loops[:k]:  # rotate who goes first
            sync(device)
            t0 = time.perf_counter()
            loop.run(work.steps)
            sync(device)
            if rep >= warmup:
                times[label].append(time.perf_counter() - t0)
    for _, loop in loops:
        if loop.watch is not None:
            loop.watch.close()
    plain = times["plain"]
    table = Table(f"{work.description}, {work.steps} steps x {reps} repetitions")
    for label, _ in VARIANTS:
        ratios = [t / p for t, p in zip(times[label], plain)]
        q1, med, q3 = quartiles(ratios)
        ms = statistics.median(times[label]) / work.steps * 1e3
        table.rows.append(Row(label, ms, med, q1, q3, TARGETS.get(label)))
    return table


# ----- vgdiag run's own loop -----------------------------------------------------------


def trainer_vs_plain(device: torch.device, reps: int, epochs: int, batch_size: int,
                     size: int, threads: int) -> Table:
    from vgdiag.engine.evaluation import EVAL_BATCH
    from vgdiag.engine.trainer import run_training
    from vgdiag.inputs.recipe import RunOptions, build_experiment
    from vgdiag.runs.store import RunStore

    data = load_synthetic(42, size=size)
    opts = RunOptions(data="synthetic", synthetic_size=size, epochs=epochs,
                      batch_size=batch_size, device=str(device))
    if hasattr(opts, "threads"):  # run_training sets the thread count it is given
        opts.threads = threads
    exp = build_experiment(opts, data)
    steps = epochs * data.train.num_batches(batch_size)

    def plain() -> None:
        # What a user's own loop does for the same result: train (tracking loss and
        # accuracy on the device, read once per epoch, as vgdiag does), validate each
        # epoch, test at the end.
        torch.manual_seed(exp.train.seed)
        model = exp.build_model().to(device)
        opt = exp.optimizer_factory(model.parameters())
        dev = data.to(device)
        order = torch.Generator().manual_seed(exp.train.seed)

        @torch.no_grad()
        def evaluate(split: Split) -> tuple[float, float]:
            model.eval()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for x, y in split.batches(max(EVAL_BATCH, batch_size)):
                out = model(x)
                loss_sum += exp.loss_fn(out, y).double() * y.shape[0]
                correct += (out.argmax(1) == y).sum()
            model.train()
            return float(loss_sum) / len(split), float(correct) / len(split)

        for _ in range(epochs):
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.int64)
            for x, y in dev.train.batches(batch_size, order):
                opt.zero_grad(set_to_none=True)
                out = model(x)
                loss = exp.loss_fn(out, y)
                loss.backward()
                opt.step()
                loss_sum += loss.detach().double() * y.shape[0]
                correct += (out.detach().argmax(1) == y).sum()
            float(loss_sum), float(correct)
            evaluate(dev.val)
        assert dev.test is not None
        evaluate(dev.test)

    def vgdiag_run(root: Path, n: int) -> None:
        with RunStore(root / f"run{n}", name=exp.name, num_classes=data.num_classes) as store:
            for event in run_training(exp, data):
                store.handle(event)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain_t: list[float] = []
        run_t: list[float] = []
        for rep in range(reps + 1):  # the first pair warms up
            pair = [("plain", plain), ("run", lambda rep=rep: vgdiag_run(root, rep))]
            for name, fn in pair if rep % 2 == 0 else pair[::-1]:
                torch.set_num_threads(threads)
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                if rep:
                    (plain_t if name == "plain" else run_t).append(time.perf_counter() - t0)
    ratios = [p / r for p, r in zip(plain_t, run_t)]  # throughput of run / of plain
    q1, med, q3 = quartiles(ratios)
    table = Table(
        f"`vgdiag run`'s loop (run_training + RunStore) against a plain loop: synthetic "
        f"{size} samples, {epochs} epochs of {steps // epochs} steps, batch {batch_size}, "
        f"every={exp.train.every}, hist_every={exp.train.hist_every}, {reps} repetitions"
    )
    table.rows.append(Row("plain loop (train, validate each epoch, test)",
                          statistics.median(plain_t) / steps * 1e3, 1.0, 1.0, 1.0))
    table.rows.append(Row("vgdiag run_training + RunStore (throughput ratio)",
                          statistics.median(run_t) / steps * 1e3, med, q1, q3))
    table.notes.append(
        f"ratio here is plain time / vgdiag time (throughput), target >= {TRAINER_TARGET}: "
        + ("ok" if med >= TRAINER_TARGET else "MISSED")
    )
    return table


# ----- memory ----------------------------------------------------------------------------


def peak_memory(device: torch.device) -> int:
    """Peak bytes so far: CUDA tensors, or this process's peak resident set size."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        # VmHWM belongs to this program's own address space; ru_maxrss would start at
        # the parent's size, inherited through fork and exec.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_child(workload: str, variant: int, steps: int, device: torch.device) -> dict:
    """Run in a fresh process: the variant's extra peak memory over a plain warm-up."""
    work = WORKLOADS[workload]
    torch.manual_seed(0)
    base = work.build().to(device)
    batches = make_batches(device, work.batch_size)
    loop = Loop(base, batches, None)
    loop.run(steps)  # the plain loop's own peak comes first
    sync(device)
    start = peak_memory(device)
    kwargs = VARIANTS[variant][1]
    if kwargs is not None:
        loop.watch = vgdiag.watch(loop.model, loop.opt, **kwargs)
    loop.run(steps)
    sync(device)
    end = peak_memory(device)
    history_bytes = 0.0
    if loop.watch is not None and kwargs:
        import pickle

        # A full history: max_records records, histograms on one in hist_every.
        records = loop.watch.history.records()
        plain = [len(pickle.dumps(r)) for r in records if not r.weight_hist]
        with_hist = [len(pickle.dumps(r)) for r in records if r.weight_hist]
        if plain and with_hist:
            share = 1 / kwargs["hist_every"] if kwargs["hist_every"] else 0.0
            per_record = (1 - share) * statistics.mean(plain) + share * statistics.mean(with_hist)
            history_bytes = per_record * loop.watch.history.max_records
    params = sum(p.numel() * p.element_size() for p in loop.model.parameters())
    return {"delta": end - start, "params": params, "history_full": history_bytes}


def measure_memory(tables: dict[str, Table], device: torch.device, steps: int,
                   threads: int) -> None:
    for workload, table in tables.items():
        info: dict = {}
        history = 0.0
        for index, row in enumerate(table.rows):
            cmd = [sys.executable, __file__, "--memory-child", f"{workload}:{index}",
                   "--memory-steps", str(steps), "--threads", str(threads),
                   "--device", str(device)]
            # glibc returns freed blocks to the system at once, so the peak resident
            # size follows the memory in use instead of what the heap kept around.
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            info = json.loads(out.stdout.strip().splitlines()[-1])
            row.peak_mb = info["delta"] / 2**20
            if "(default)" in row.label:
                history = info["history_full"]
        kind = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                else "peak RSS (VmHWM)")
        table.notes.append(
            f"extra peak memory = increase of {kind} over a plain warm-up of {steps} steps, "
            f"one fresh process per variant, glibc set to return freed memory at once; "
            f"parameters are {info['params'] / 2**20:.2f} MB. The probe keeps one copy of "
            f"the parameters (W0, for weight_change) and, during a sampled step, a copy of "
            f"the weights before the update and a difference (about 3x the parameters in "
            f"all); histogram steps add a flat copy of the gradients."
        )
        if history:
            table.notes.append(
                f"a full history (max_records=4096, decimated beyond) of this model's records, "
                f"histograms on one record in 10 (the default), takes about "
                f"{history / 2**20:.1f} MB pickled"
            )


# ----- output ----------------------------------------------------------------------------


def print_table(table: Table) -> None:
    print(f"\n{table.title}")
    print(f"  {'variant':46s} {'ms/step':>8s} {'ratio':>6s} {'IQR':>13s} {'target':>7s} "
          f"{'peak MB':>8s}")
    for r in table.rows:
        target = f"<={r.target:.2f}" if r.target else ""
        peak = f"{r.peak_mb:+.1f}" if r.peak_mb is not None else ""
        print(f"  {r.label:46s} {r.ms_per_step:8.3f} {r.ratio:6.3f} "
              f"{r.q1:6.3f}-{r.q3:<6.3f} {target:>7s} {peak:>8s} {r.verdict}")
    for note in table.notes:
        print(f"  note: {note}")


def markdown(tables: list[Table], header: str) -> str:
    lines = [header, ""]
    for table in tables:
        lines += [f"**{table.title}**", ""]
        has_peak = any(r.peak_mb is not None for r in table.rows)
        cols = "| variant | ms/step | ratio (median) | IQR | target |"
        sep = "|---|---:|---:|---:|---|"
        if has_peak:
            cols += " extra peak MB |"
            sep += "---:|"
        lines += [cols, sep]
        for r in table.rows:
            target = f"<= {r.target:.2f} ({r.verdict})" if r.target else ""
            line = (f"| {r.label} | {r.ms_per_step:.2f} | {r.ratio:.3f} | "
                    f"{r.q1:.3f}-{r.q3:.3f} | {target} |")
            if has_peak:
                line += f" {r.peak_mb:+.1f} |" if r.peak_mb is not None else " |"
            lines.append(line)
        lines += [""] + [f"- {n}" for n in table.notes] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=12, help="timed repetitions per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for every measurement (1 by default: "
                             "on a shared machine two threads make the timings noisy)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="mlp,conv",
                        help="comma-separated: mlp,conv,convf (empty: none)")
    parser.add_argument("--trainer-reps", type=int, default=8)
    parser.add_argument("--trainer-batch", default="64,512",
                        help="batch sizes of the run_training comparison (vgdiag run's "
                             "default for synthetic data is 64; the reference experiment's 512)")
    parser.add_argument("--trainer-size", type=int, default=60000,
                        help="synthetic samples of the run_training comparison (60000: the "
                             "reference's FashionMNIST-sized training set, 80%% of it trained)")
    parser.add_argument("--no-trainer", action="store_true", help="skip the run_training part")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory part")
    parser.add_argument("--memory-steps", type=int, default=40)
    parser.add_argument("--markdown", action="store_true", help="also print markdown tables")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.memory_child:
        workload, variant = args.memory_child.split(":")
        print(json.dumps(memory_child(workload, int(variant), args.memory_steps, device)))
        return

    started = time.perf_counter()
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {os.cpu_count()} cores")
    header = (f"Measured on {where}, torch {torch.__version__}, "
              f"torch.set_num_threads({args.threads}), vgdiag {vgdiag.__version__}.")
    print(header)
    tables: dict[str, Table] = {}
    for name in filter(None, args.models.split(",")):
        work = WORKLOADS[name.strip()]
        tables[work.name] = time_workload(work, device, args.reps, args.warmup)
        print_table(tables[work.name])
    if not args.no_memory:
        measure_memory(tables, device, args.memory_steps, args.threads)
    out = list(tables.values())
    if not args.no_trainer:
        for batch in args.trainer_batch.split(","):
            out.append(trainer_vs_plain(device, args.trainer_reps, epochs=3,
                                        batch_size=int(batch), size=args.trainer_size,
                                        threads=args.threads))
            print_table(out[-1])
    print("\n" + "=" * 100)
    for table in out:
        print_table(table)
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.markdown:
        print("\n" + markdown(out, header))


if __name__ == "__main__":
    main()
