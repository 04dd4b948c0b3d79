"""How a run stands or ended: the one place its status values are spelled.

The values are an interface (summary.json's `status`, documented in the README), so
they never change spelling. `RunStatus` is a `str`, so it compares equal to the plain
strings a folder holds and serialises as one.
"""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    """A run's status. Written to a folder: RUNNING, then one of the final four."""

    RUNNING = "running"  # training; a folder still saying so after its process ended was cut off
    COMPLETED = "completed"  # trained to its planned end (or stopped on a NaN, see the findings)
    INTERRUPTED = "interrupted"  # a signal or the user stopped it; nothing else does
    FAILED = "failed"  # the user's code raised, or the folder could not be written
    CUT_OFF = "cut off"  # read back only: the process died without finishing the folder
    # Shown by the dashboard only, never written to a folder:
    STARTING = "starting"
    PAUSED = "paused"
    STOPPING = "stopping"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def final(self) -> bool:
        """True once the run can change no more."""
        return self in FINAL_STATUSES

    @classmethod
    def parse(cls, value: object) -> RunStatus | None:
        """The status a folder holds, or None when it is not one of ours."""
        try:
            return cls(value)
        except ValueError:
            return None


FINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.INTERRUPTED, RunStatus.FAILED, RunStatus.CUT_OFF}
)
# The statuses a run folder's summary.json may hold.
WRITTEN_STATUSES = (RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.INTERRUPTED,
                    RunStatus.FAILED)
