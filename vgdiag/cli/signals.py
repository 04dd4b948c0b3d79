"""Ctrl-C and SIGTERM become a stop event the trainer polls."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from vgdiag.engine.interrupts import note_signal


class StopOnSignal:
    """SIGINT/SIGTERM ask the trainer to stop; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        note_signal()  # a real signal: tells it from user code raising KeyboardInterrupt
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
