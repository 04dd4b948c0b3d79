"""Where training runs: `--device` resolved, and the CPU threads a model is given."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from vgdiag.errors import UserError

# Below this many parameters a CPU step's kernels are too small for intra-op threads
# to pay for their synchronisation: on 2-core machines one thread trained the reference
# MLP 8-14x faster than two (bench in docs/PERFORMANCE.md). Larger models keep
# PyTorch's default; --threads overrides both.
SMALL_MODEL_PARAMS = 10_000_000


def resolve_device(spec: str) -> str:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> a device string, or UserError."""
    spec = spec.strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda was asked for but CUDA is not available here "
                "(no GPU or a CPU-only PyTorch build): use --device cpu or --device auto"
            )
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(
                f"--device {spec}: there are {torch.cuda.device_count()} CUDA device(s)"
            )
        return spec
    raise UserError(f"unknown --device {spec!r}: use auto, cpu or cuda")


def set_cpu_threads(model: nn.Module, device: torch.device, threads: int) -> None:
    """PyTorch's CPU threads for training `model`: `threads`, or 0 for one thread below
    SMALL_MODEL_PARAMS parameters and PyTorch's default above. No effect off the CPU."""
    if device.type != "cpu":
        return
    if threads == 0 and sum(p.numel() for p in model.parameters()
                            if not nn.parameter.is_lazy(p)) < SMALL_MODEL_PARAMS:
        threads = 1
    if threads > 0:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def cpu_settings_kept() -> Iterator[None]:
    """Put back the process's CPU threads and its flush-to-zero mode on leaving: a run
    started in a process that goes on (a test, a notebook, a script calling
    run_training) must not leave it with vgdiag's settings."""
    threads = torch.get_num_threads()
    # torch has no getter: a subnormal times one reads as 0 where they are flushed
    flushed = torch.tensor([1e-39]).mul(1.0).item() == 0.0
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_flush_denormal(flushed)


def flush_denormals(device: torch.device) -> None:
    """Treat subnormal floats as zero in this process's CPU kernels (no effect elsewhere).

    Saturated sigmoids and a vanished gradient produce values below 1.2e-38, which x86
    cores compute on a slow path: on the reference MLP with N(0, 10) weights a step
    took 4x as long (18 ms against 5). Numbers that small read as zero in every
    statistic anyway. Process-wide: only while vgdiag trains itself (`run`, compare's
    workers; cpu_settings_kept puts it back after), never in a user's loop under `watch`.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)
