"""Telling a real interruption from user code that raises KeyboardInterrupt or exits.

A Ctrl-C or SIGTERM is the user stopping vgdiag (exit 130, folder `interrupted`).
A `sys.exit()` or `raise KeyboardInterrupt` inside the user's model, data or loss is
a failure of that code (exit 2 while building, 3 while training). Python raises
KeyboardInterrupt for both, so the command line notes every signal it receives
(`note_signal`) and the boundaries around user code ask `is_user_exit`.
"""

from __future__ import annotations

import signal
import threading

_received = threading.Event()


def note_signal() -> None:
    """Called by a signal handler: a real SIGINT or SIGTERM arrived."""
    _received.set()


def signal_received() -> bool:
    """Whether a SIGINT or SIGTERM was noted in this process."""
    return _received.is_set()


def is_user_exit(exc: BaseException) -> bool:
    """True when `exc` is SystemExit or KeyboardInterrupt raised by code, not a signal.

    Signals reach only the main thread, so in any other thread a KeyboardInterrupt
    is code. In the main thread it is code unless a signal was noted; under Python's
    own SIGINT handler (vgdiag used as a library) nobody notes signals, so there a
    KeyboardInterrupt counts as the user's Ctrl-C.
    """
    if isinstance(exc, SystemExit):
        return True
    if not isinstance(exc, KeyboardInterrupt) or _received.is_set():
        return False
    if threading.current_thread() is not threading.main_thread():
        return True
    return signal.getsignal(signal.SIGINT) is not signal.default_int_handler


def describe_exit(exc: BaseException) -> str:
    """'SystemExit: 0' or 'KeyboardInterrupt', for one line of an error."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: {exc.code}" if exc.code is not None else "SystemExit"
    return type(exc).__name__


def _interrupt(signum: int, frame: object) -> None:
    note_signal()
    raise KeyboardInterrupt


def interrupt_on_signals() -> dict[int, object]:
    """Make SIGINT and SIGTERM raise a noted KeyboardInterrupt; returns what they were.

    For the command line, from its first moment: a SIGTERM before any folder exists
    ends vgdiag as interrupted (exit 130, one line), not killed without a word.
    Handlers someone else installed are left alone.
    """
    saved: dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return saved
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        saved[sig] = current
        if current in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(sig, _interrupt)
    return saved


def restore_signals(saved: dict[int, object]) -> None:
    """Put back what `interrupt_on_signals` replaced."""
    if threading.current_thread() is threading.main_thread():
        for sig, handler in saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def ignore_signals() -> None:
    """SIGINT and SIGTERM do nothing from now on: for a program that is only exiting."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
