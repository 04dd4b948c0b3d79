"""What the whole command line knows about this invocation (set once by app._main)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _State:
    debug: bool = False  # --debug (anywhere on the line) or VGDIAG_DEBUG: full tracebacks


STATE = _State()
