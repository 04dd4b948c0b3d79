"""The probe of this tree against the probe of an earlier commit, interleaved in one run.

    python bench/probe_ab.py --base HEAD~1            # every=1 on the reference MLP
    python bench/probe_ab.py --base 9670006 --every 25 --reps 30

Two probes measured in separate runs of bench/probe_overhead.py differ by more than the
change between them whenever the machine's load drifts (on a shared 2-core VM it does).
Here one process holds a plain loop and the two probes on copies of one model, fed the
same batches, and each repetition times all three in a rotating order, so drift hits
them alike. The base commit's package is checked out into a temporary git worktree and
imported under its own `sys.modules`; each probe runs with its own modules in place, so
imports made inside functions resolve to the right tree. Printed: each probe's ratio to
the plain loop (median and IQR over repetitions), and new/base (median of the
per-repetition ratios of the two probes' times).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import pkgutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from probe_overhead import Loop, build_mlp, make_batches, quartiles  # noqa: E402

Modules = dict[str, ModuleType]


def _take_ours() -> Modules:
    """Remove vgdiag's modules from sys.modules and return them."""
    ours = [k for k in sys.modules if k == "vgdiag" or k.startswith("vgdiag.")]
    return {k: sys.modules.pop(k) for k in ours}


def load_tree(src: Path) -> Modules:
    """Import every module of the vgdiag package under `src`; return them, leaving
    sys.modules as it was."""
    before = _take_ours()
    sys.path.insert(0, str(src))
    try:
        pkg = importlib.import_module("vgdiag")
        for info in pkgutil.walk_packages(pkg.__path__, "vgdiag."):
            # the dashboard is not timed; __main__ would run the CLI
            if not info.name.startswith("vgdiag.tui") and not info.name.endswith("__main__"):
                importlib.import_module(info.name)
        return _take_ours()
    finally:
        sys.path.remove(str(src))
        sys.modules.update(before)


@contextlib.contextmanager
def using(mods: Modules) -> Iterator[None]:
    saved = _take_ours()
    sys.modules.update(mods)
    try:
        yield
    finally:
        _take_ours()
        sys.modules.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a commit of this repository")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--hist-every", type=int, default=0)
    parser.add_argument("--reps", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="steps per repetition")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(tree), args.base], check=True)
        try:
            trees = {"base": load_tree(tree), "new": load_tree(ROOT)}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(tree)], check=True)

    torch.manual_seed(0)
    model, batches = build_mlp(), make_batches(torch.device("cpu"), 512)
    kwargs = {"every": args.every, "hist_every": args.hist_every}
    loops: list[tuple[str, Loop, Modules | None]] = [("plain", Loop(model, batches, None), None)]
    for name, mods in trees.items():
        with using(mods):
            loop = Loop(model, batches, None)
            loop.watch = mods["vgdiag"].watch(loop.model, loop.opt, **kwargs)
            loops.append((name, loop, mods))

    times: dict[str, list[float]] = {name: [] for name, _, _ in loops}
    for rep in range(args.warmup + args.reps):
        k = rep % len(loops)
        for name, loop, mods in loops[k:] + loops[:k]:
            with using(mods) if mods is not None else contextlib.nullcontext():
                t0 = time.perf_counter()
                loop.run(args.steps)
                elapsed = time.perf_counter() - t0
            if rep >= args.warmup:
                times[name].append(elapsed)
    for _, loop, mods in loops[1:]:
        with using(mods):  # type: ignore[arg-type]
            loop.watch.close()  # type: ignore[union-attr]

    print(f"reference MLP, batch 512, every={args.every}, hist_every={args.hist_every}, "
          f"{args.steps} steps x {args.reps} repetitions, {args.threads} thread(s)")
    plain = times["plain"]
    print(f"  plain: {statistics.median(plain) / args.steps * 1e3:.2f} ms/step")
    for name in trees:
        q1, med, q3 = quartiles([t / p for t, p in zip(times[name], plain)])
        print(f"  {name} ({args.base if name == 'base' else 'this tree'}): "
              f"{med:.3f}x plain (IQR {q1:.3f}-{q3:.3f})")
    q1, med, q3 = quartiles([n / b for n, b in zip(times["new"], times["base"])])
    print(f"  new/base: {med:.3f} (IQR {q1:.3f}-{q3:.3f})")


if __name__ == "__main__":
    main()
