"""Training throughput with the dashboard open against headless, on the same run.

    python bench/tui_throughput.py [--epochs 5] [--depth 7] [--width 128] [--data digits]

Both sides train the same seeded recipe into a run folder; the dashboard side runs
the real app headless (App.run_test) with its redraw timer live, so the UI thread
competes for the interpreter as it would in a terminal. Prints steps/s of each and
their ratio; the dashboard should keep at least 0.9x. Exit code 1 below that.
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

from vgdiag.events import RunFinished
from vgdiag.recipe import RunOptions, build_experiment, load_data
from vgdiag.store import RunStore
from vgdiag.trainer import run_training

TARGET_RATIO = 0.9


def headless(opts: RunOptions, folder: Path) -> float:
    data = load_data(opts)
    experiment = build_experiment(opts, data)
    with RunStore(folder, name=experiment.name, num_classes=data.num_classes) as store:
        for event in run_training(experiment, data, threading.Event()):
            store.handle(event)
            if isinstance(event, RunFinished):
                return event.steps_done / event.seconds
    raise RuntimeError("training did not finish")


def dashboard(opts: RunOptions, folder: Path, size: tuple[int, int]) -> float:
    from vgdiag.tui.app import build_app

    data = load_data(opts)
    experiment = build_experiment(opts, data)

    async def drive() -> float:
        with RunStore(folder, name=experiment.name, num_classes=data.num_classes) as store:
            app = build_app(experiment=experiment, data=data, store=store, title="bench")
            async with app.run_test(size=size) as pilot:
                session = app.session
                assert session is not None
                while session.running:
                    await pilot.pause(0.1)
                view = session.state.view()
                await pilot.press("q")
            return view.steps_done / view.seconds

    return asyncio.run(drive())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--depth", type=int, default=7)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians compared")
    parser.add_argument("--size", default="120x40", help="terminal size of the dashboard")
    args = parser.parse_args()
    opts = RunOptions(data=args.data, epochs=args.epochs, depth=args.depth, width=args.width,
                      every=args.every, device="cpu")
    w, h = (int(v) for v in args.size.split("x"))
    plain: list[float] = []
    tui: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):  # interleaved, so drift in machine load hits both
            plain.append(headless(opts, Path(tmp) / f"headless-{i}"))
            tui.append(dashboard(opts, Path(tmp) / f"dashboard-{i}", (w, h)))
            print(f"run {i + 1}: headless {plain[-1]:.0f} steps/s, dashboard {tui[-1]:.0f} steps/s",
                  flush=True)
    a, b = statistics.median(plain), statistics.median(tui)
    ratio = b / a
    print(f"headless {a:.0f} steps/s  dashboard {b:.0f} steps/s  ratio {ratio:.2f} "
          f"(target >= {TARGET_RATIO})")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    started = time.perf_counter()
    code = main()
    print(f"({time.perf_counter() - started:.0f} s)")
    sys.exit(code)
