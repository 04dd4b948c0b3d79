"""Warnings said from inside a user's training step, which must never raise there."""

from __future__ import annotations

import sys
import warnings


def tell(message: str, stacklevel: int = 2) -> None:
    """`warnings.warn(message)`, as from the caller. Under warnings-as-errors (pytest's
    `filterwarnings = error`, `python -W error`) a warning raises, and from a hook it
    would raise out of the user's `optimizer.step()` or forward: there the message
    goes to stderr instead, and training goes on."""
    try:
        warnings.warn(message, stacklevel=stacklevel + 1)
    except Exception:  # noqa: BLE001  the filter turned it into an exception
        print(f"warning: {message}", file=sys.stderr)
