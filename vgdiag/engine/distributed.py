"""Data-parallel training for `torchrun -m vgdiag run`: DDP by default, FSDP2 on request.

Every rank runs the same trainer on the same seeded data order; each takes its own
slice of every global batch, so the ranks together see exactly the batches one
process would. The loss of a rank's slice is weighted by its share of the batch
before backward, so the gradient DDP (or FSDP's reduce-scatter) averages is the
gradient of the whole batch's mean loss, even when a batch does not split evenly.

Decisions that change the control flow (stop on Ctrl-C, stop on a NaN) are taken
together, at points where the ranks exchange numbers anyway (sampled steps, epoch
ends): a rank that went its own way would leave the others waiting in a collective.
A rank that raises leaves its error in the rendezvous store; the others fail in their
next collective (the peer is gone, or the timeout expires) and rank 0 writes the
run folder as failed, with that error.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from vgdiag.errors import SaidByRankZero, UserError
from vgdiag.torchrun_env import every_ranks_error, launched_by_torchrun

# A collective that waits longer than this fails instead of hanging: long enough for a
# slow epoch's evaluation or the first CUDA compilation on one rank, short enough that
# a lost rank ends the run. VGDIAG_DIST_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "VGDIAG_DIST_TIMEOUT_S"
_FAILED_KEY = "vgdiag/failed/"  # + rank: the one-line error of a rank that raised
# How long rank 0 looks for a peer's error after its own collective failed: the peer
# writes it before it exits, which is what broke the collective, so it is there.
_PEER_ERROR_WAIT_S = 2.0


def refuse_under_torchrun(what: str) -> None:
    """UserError for front ends that are single-process by design."""
    if launched_by_torchrun():
        raise UserError(
            f"{what} runs in one process: start it without torchrun "
            "(torchrun is for `vgdiag run`, which then trains data-parallel)"
        )


def _timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"{TIMEOUT_ENV}={raw!r}: give a positive number of seconds")
    return value


@dataclass
class DataParallel:
    """This process's place in a data-parallel run, and the few collectives it needs."""

    rank: int
    world_size: int
    local_rank: int
    device: str  # "cpu" or "cuda:<local rank>"
    fsdp: bool = False  # shard parameters with FSDP2 instead of replicating with DDP

    def check(self, experiment: Any) -> None:
        """UserError for a recipe this mode cannot train."""
        if self.fsdp and experiment.stage_plan is not None:
            raise UserError("--fsdp shards the model in place, which a staged schedule "
                            "(layerwise) cannot share between stages: drop --fsdp to use DDP")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run folder and shows the progress."""
        return self.rank == 0

    # ----- set-up ----------------------------------------------------------------
    @classmethod
    def from_torchrun(cls, device_spec: str, fsdp: bool = False) -> DataParallel:
        """Join the process group torchrun prepared; the device follows LOCAL_RANK.

        `device_spec` is the user's --device: auto | cpu | cuda (cuda:N is refused,
        since each rank takes the GPU of its local rank).
        """
        import torch.distributed as dist

        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ["LOCAL_RANK"])
        spec = device_spec.strip().lower()
        if spec.startswith("cuda:"):
            raise every_ranks_error(
                f"--device {spec} under torchrun: each rank uses the GPU of its local rank; "
                "give --device cuda (or auto)"
            )
        cuda = spec in ("auto", "cuda") and torch.cuda.is_available()
        if spec == "cuda" and not cuda:
            raise UserError("--device cuda was asked for but CUDA is not available "
                                    "here: use --device cpu or --device auto")
        if cuda and local >= torch.cuda.device_count():
            raise UserError(f"local rank {local} has no GPU: this machine has "
                            f"{torch.cuda.device_count()}; start fewer processes per node")
        if not dist.is_available():
            raise UserError(
                "this PyTorch build has no torch.distributed: run without torchrun")
        backend = "nccl" if cuda else "gloo"
        device = f"cuda:{local}" if cuda else "cpu"
        if cuda:
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=timedelta(seconds=_timeout_s()))
        if fsdp and not fsdp2_available():
            raise UserError(
                "--fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard), which this PyTorch "
                "build lacks: drop --fsdp to train with DDP")
        return cls(rank, world, local, device, fsdp)

    def check_all(self, error: str | None) -> None:
        """Every rank reports whether its set-up failed; any failure stops all of them.

        Bad input (a missing file, a taken --out folder) can be noticed on one rank only;
        without this the others would wait for it in their first collective.
        """
        import torch.distributed as dist

        errors: list[Any] = [None] * self.world_size
        dist.all_gather_object(errors, error)
        for rank, message in enumerate(errors):
            if message:
                where = "" if message == error else f"rank {rank}: "
                # Every rank got the message, rank 0 included: it alone prints it.
                raise (UserError if self.is_main else SaidByRankZero)(f"{where}{message}")

    def close(self) -> None:
        """Leave the process group after a run every rank finished."""
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    # ----- model -------------------------------------------------------------------
    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP around the model, or FSDP2 units sharded in place; returns what to call.

        FSDP2 shards the children of the outermost module that has more than one child
        holding parameters (the blocks or layers of usual models), the root holding the
        rest: a unit is gathered when its forward runs, so a parameter used by its
        parent's code (MultiheadAttention's out_proj) must not be a unit of its own.
        """
        if not any(p.requires_grad for p in model.parameters()):
            return model  # nothing to average (a frozen stage)
        if not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(self.device).index] if self.device != "cpu" else None
            return DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(torch.device(self.device).type, (self.world_size,))
        for unit in fsdp_units(model):
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model

    # ----- data ----------------------------------------------------------------------
    def shard(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's slice of a global batch and the weight of its mean loss.

        The slices are contiguous and differ in size by at most one sample. A rank left
        without a sample (a batch smaller than the world) gets the first sample with
        weight 0: it still runs forward and backward, as the collectives need.
        """
        n = int(y.shape[0])
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        size = base + (1 if self.rank < extra else 0)
        if size == 0:
            return x[:1], y[:1], 0.0
        return x[start : start + size], y[start : start + size], self.world_size * size / n

    # ----- collectives -----------------------------------------------------------------
    def all_sum(self, values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sums over ranks of 0-d tensors, in one all_reduce."""
        import torch.distributed as dist

        vector = torch.stack([v.to(self.device, torch.float64) for v in values])
        dist.all_reduce(vector)
        return list(vector.unbind())

    def any(self, *flags: bool) -> list[bool]:
        """For each flag: is it set on some rank? One all_reduce for all of them."""
        import torch.distributed as dist

        vector = torch.tensor([float(f) for f in flags], device=self.device)
        dist.all_reduce(vector, op=dist.ReduceOp.MAX)
        return [bool(v) for v in vector.tolist()]

    # ----- failures -----------------------------------------------------------------
    def report_failure(self, error: str) -> None:
        """Leave this rank's error where rank 0 can read it (best effort)."""
        store = _store()
        if store is not None:
            # The store may be gone with the agent: then the error stays on this rank.
            with contextlib.suppress(Exception):
                store.set(f"{_FAILED_KEY}{self.rank}", error)

    def peer_failure(self, wait_s: float = _PEER_ERROR_WAIT_S) -> str | None:
        """The error of another rank that raised, if one left it in the store."""
        store = _store()
        if store is None:
            return None
        keys = [f"{_FAILED_KEY}{r}" for r in range(self.world_size) if r != self.rank]
        deadline = time.monotonic() + wait_s
        while True:
            for rank_key in keys:
                try:
                    if store.check([rank_key]):
                        rank = rank_key.rsplit("/", 1)[1]
                        return f"rank {rank}: {store.get(rank_key).decode(errors='replace')}"
                except Exception:
                    return None
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


# What gloo and NCCL say when the process at the other end of a collective is gone.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
              "NCCL communicator was aborted", "Socket Timeout")


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective failing because another rank's process died."""
    text = str(exc)
    return any(marker in text for marker in _LOST_PEER)


# A C++ source location in a backend's message ("[/__w/pytorch/.../pair.cc:537] "):
# the build machine's path, nothing a user can act on.
_SOURCE_PLACE = re.compile(r"\[[^\]\s]*\.(?:cc|cpp|cu|h|hpp):\d+\]\s*")


def backend_message(exc: BaseException) -> str:
    """A collective's error as a user reads it: without the backend's source paths."""
    return _SOURCE_PLACE.sub("", str(exc)).strip()


def fsdp2_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one (see DataParallel.wrap)."""
    module = model
    while True:
        if any(True for _ in module.parameters(recurse=False)):
            return []  # its own code may use its children's parameters: one unit
        holders = [c for c in module.children() if any(True for _ in c.parameters())]
        if len(holders) != 1:
            return holders
        module = holders[0]


def _store() -> Any:
    try:
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    except Exception:
        return None
