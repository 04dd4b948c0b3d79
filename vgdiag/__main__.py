"""`python -m vgdiag` is the `vgdiag` command."""

import sys

from vgdiag.engine.interrupts import interrupt_on_signals

interrupt_on_signals()  # before the heavier imports: a SIGTERM now is an interruption too
try:
    from vgdiag.cli.app import entry
except KeyboardInterrupt:
    print("vgdiag: interrupted", file=sys.stderr)
    sys.exit(130)

entry()
