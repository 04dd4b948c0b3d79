"""Training throughput with the dashboard open against headless, on the same run.

    python bench/tui_throughput.py [--data synthetic] [--epochs 30] [--depth 7] [--width 128]

Both sides train the same seeded recipe into a run folder (by default the reference
model, 7 sigmoid layers of 128, on FashionMNIST-shaped synthetic data); the
dashboard side runs the real app headless (App.run_test) with its redraw timer
live, so the UI thread competes for the interpreter as it would in a terminal.
Runs alternate after one warm-up, so a change in machine load hits both sides.
Prints steps/s of each, their ratio (the dashboard should keep at least 0.9x; exit
code 1 below that) and how busy the UI thread was. `--data digits --every 1` is
the worst case: tiny steps, an epoch every few hundred milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from vgdiag.engine.events import Event, RunFinished, StepProgress, StepSampled
from vgdiag.engine.trainer import run_training
from vgdiag.inputs.recipe import RunOptions, build_experiment, load_data
from vgdiag.runs.store import RunStore

TARGET_RATIO = 0.9
# Steps/s are taken after this much training: the dashboard's first layout (a few
# hundred milliseconds, once) is not what a run of minutes pays.
SETTLE_S = 1.0


class TimedStore(RunStore):
    """A RunStore that also notes (seconds, steps done) of every progress event."""

    def __init__(self, path: Path, name: str, num_classes: int) -> None:
        super().__init__(path, name, num_classes)
        self.marks: list[tuple[float, int]] = []

    def handle(self, event: Event) -> None:
        super().handle(event)
        if isinstance(event, (StepSampled, StepProgress, RunFinished)):
            self.marks.append((event.seconds, event.steps_done))

    def steady_rate(self) -> float:
        settled = [m for m in self.marks if m[0] >= SETTLE_S] or self.marks
        (t0, s0), (t1, s1) = settled[0], settled[-1]
        if t1 <= t0:
            raise RuntimeError("the run is too short to measure: give more --epochs")
        return (s1 - s0) / (t1 - t0)


def headless(opts: RunOptions, folder: Path) -> float:
    data = load_data(opts)
    experiment = build_experiment(opts, data)
    with TimedStore(folder, experiment.name, data.num_classes) as store:
        for event in run_training(experiment, data, threading.Event()):
            store.handle(event)
    return store.steady_rate()


def dashboard(opts: RunOptions, folder: Path, size: tuple[int, int]) -> tuple[float, float]:
    """(steps/s, share of the wall time the UI thread spent on the CPU)."""
    from vgdiag.tui.app import build_app

    data = load_data(opts)
    experiment = build_experiment(opts, data)

    async def drive() -> float:
        with TimedStore(folder, experiment.name, data.num_classes) as store:
            app = build_app(experiment=experiment, data=data, store=store, title="bench")
            async with app.run_test(size=size) as pilot:
                session = app.session
                assert session is not None
                while session.running and session.state.view().seconds < SETTLE_S:
                    await asyncio.sleep(0.05)
                # The event loop runs in this thread: its CPU time is the UI's cost.
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                while session.running:
                    # asyncio.sleep, not pilot.pause: the pilot forces a repaint per call.
                    await asyncio.sleep(0.1)
                ui_share = (time.thread_time() - cpu0) / (time.perf_counter() - wall0)
                await pilot.press("q")
            return store.steady_rate(), ui_share

    return asyncio.run(drive())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--depth", type=int, default=7)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians compared")
    parser.add_argument("--size", default="120x40", help="terminal size of the dashboard")
    parser.add_argument("--device", default="cpu", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads (0: torch's default). On a shared or "
                        "small machine 1 keeps OpenMP spin-waits out of the measurement")
    args = parser.parse_args()
    opts = RunOptions(data=args.data, epochs=args.epochs, depth=args.depth, width=args.width,
                      every=args.every, device=args.device)
    w, h = (int(v) for v in args.size.split("x"))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    plain: list[float] = []
    tui: list[float] = []
    ui: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        headless(opts, Path(tmp) / "warm-up")  # first-run costs (allocator, kernels) off the books
        for i in range(args.repeat):  # interleaved, so drift in machine load hits both
            plain.append(headless(opts, Path(tmp) / f"headless-{i}"))
            rate, share = dashboard(opts, Path(tmp) / f"dashboard-{i}", (w, h))
            tui.append(rate)
            ui.append(share)
            print(f"run {i + 1}: headless {plain[-1]:.0f} steps/s, dashboard {rate:.0f} steps/s, "
                  f"UI thread busy {share:.1%}", flush=True)
    a, b = statistics.median(plain), statistics.median(tui)
    ratio = b / a
    print(f"headless {a:.0f} steps/s  dashboard {b:.0f} steps/s  ratio {ratio:.2f} "
          f"(target >= {TARGET_RATIO}); UI thread busy {statistics.median(ui):.1%} of the time")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s)")
    sys.exit(code)
