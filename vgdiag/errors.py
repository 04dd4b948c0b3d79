"""Errors a user can cause, and the exit codes CI relies on."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes; stable, documented in the README."""

    OK = 0  # finished, nothing at or above --fail-on
    FINDINGS = 1  # a finding at or above --fail-on
    BAD_INPUT = 2  # the user's input is wrong: one line on stderr says what to do
    TRAINING_FAILED = 3  # the model, data or training raised; the run folder is still written
    INTERRUPTED = 130  # Ctrl-C or SIGTERM: the run folder is complete and marked interrupted


class UserError(Exception):
    """Something the user can fix: shown as one line on stderr, exit code 2."""


class SaidByRankZero(UserError):
    """Bad input every rank of a torchrun run knows of: rank 0 says it, the others exit 2
    silently, so the one line is not printed once per process."""


class RunFolderError(Exception):
    """The run folder could not be written (a full disk, a vanished folder): exit code 3.

    The message is one line naming the cause and the path; the store has already
    marked the folder `failed` where it still could.
    """
