"""Whether this process was started by torchrun, from its variables alone (no torch
import: the command line reads it before it knows whether it will train)."""

from __future__ import annotations

import os

from vgdiag.errors import SaidByRankZero, UserError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or any launcher that sets its variables)."""
    return all(k in os.environ for k in TORCHRUN_ENV)


def not_rank_zero() -> bool:
    """A data-parallel process other than rank 0: it leaves bad input to rank 0 to say."""
    return launched_by_torchrun() and os.environ["RANK"] != "0"


def every_ranks_error(message: str) -> UserError:
    """Bad input that each rank finds for itself (the same command line, the same
    machine): rank 0 alone prints it."""
    return (SaidByRankZero if not_rank_zero() else UserError)(message)
