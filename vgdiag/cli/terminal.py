"""Whether a dashboard can open: it needs a terminal to draw on and to read keys from."""

from __future__ import annotations

import sys

from vgdiag.errors import UserError


def need_terminal(what: str, instead: str) -> None:
    """UserError where stdin or stdout is not a terminal (a CI job, a pipe, `nohup`):
    a dashboard drawn into a log is noise, and without a terminal's keys it cannot be
    left but by a signal."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(f"{what} needs a terminal (stdin and stdout); here there is none: "
                        f"{instead}")
