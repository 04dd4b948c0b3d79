"""The `vgdiag` program (and `python -m vgdiag`): signals first, then the command line.

The command line imports torch, Typer and the user's code; a Ctrl-C or SIGTERM during
those imports must still end vgdiag as interrupted (one line, exit 130), not in a
traceback. So this module imports nothing heavy before it takes the signals.
"""

from __future__ import annotations

import sys

from vgdiag.engine.interrupts import interrupt_on_signals
from vgdiag.errors import ExitCode  # enum only: still light


def entry() -> None:
    interrupt_on_signals()
    try:
        from vgdiag.cli.app import entry as run
    except KeyboardInterrupt:
        print("vgdiag: interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)
    run()
