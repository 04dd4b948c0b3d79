"""When to redraw: often enough to look live, rarely enough that training keeps its speed.

Training runs in a thread of the same interpreter, so every millisecond the UI
thread spends drawing is a millisecond the training loop may wait for the GIL. The
pacer measures the UI thread's own CPU time and stretches the interval between
redraws while that share is over budget, down to a floor; it comes back up when
drawing gets cheap again (a smaller terminal, a quieter tab).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

MAX_HZ = 4.0  # redraws a second at most: the header's numbers move smoothly
MIN_HZ = 0.5  # never slower than this, however busy drawing is
# Share of wall time the UI thread may use. Training loses more than this (it also
# waits for the GIL the UI holds), about twice as much in bench/tui_throughput.py.
UI_BUDGET = 0.03
STEP = 1.5  # factor by which the interval grows or shrinks per redraw


class RedrawPacer:
    """Says, on each tick of a fast timer, whether a redraw is due now.

    Args:
        max_hz: upper bound on redraws a second.
        min_hz: lower bound on redraws a second.
        budget: share of wall time the calling thread may spend on the CPU.
        clock: wall clock.
        cpu_clock: CPU time of the calling thread.
    """

    def __init__(
        self,
        max_hz: float = MAX_HZ,
        min_hz: float = MIN_HZ,
        budget: float = UI_BUDGET,
        clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.shortest = 1.0 / max_hz
        self.longest = 1.0 / min_hz
        self.budget = budget
        self.interval = self.shortest  # current seconds between redraws
        self.share = math.nan  # the UI thread's CPU share over the last interval
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._last = -math.inf
        self._cpu_mark = cpu_clock()

    def due(self) -> bool:
        """True when a redraw may happen now (and starts the next interval)."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed < self.interval:
            return False
        cpu = self._cpu_clock()
        if math.isfinite(elapsed) and elapsed > 0:
            self.share = (cpu - self._cpu_mark) / elapsed
            if self.share > self.budget:
                self.interval = min(self.interval * STEP, self.longest)
            elif self.share < self.budget / 2:
                self.interval = max(self.interval / STEP, self.shortest)
        self._last = now
        self._cpu_mark = cpu
        return True


class RedrawQueue:
    """Which runs have news since the last redraw, and whether a redraw is due.

    A run's worker says "look again" through `notifier`, which posts at most one
    message per redraw: each wakes the UI thread, which then holds the GIL. A redraw
    (`take`) clears the run's flag before it reads the run's state, so no change is
    left unseen.
    """

    def __init__(self, pacer: RedrawPacer | None = None) -> None:
        self.pacer = pacer or RedrawPacer()
        self._dirty: set[str] = set()
        self._unseen: dict[str, threading.Event] = {}

    def add(self, label: str) -> None:
        """Start watching run `label` (from the UI thread, before its worker starts)."""
        self._unseen[label] = threading.Event()

    def notifier(self, label: str, post: Callable[[], object]) -> Callable[[], None]:
        """What run `label`'s worker calls after each event: `post` unless one is pending."""
        unseen = self._unseen.setdefault(label, threading.Event())

        def notify() -> None:
            if not unseen.is_set():
                unseen.set()
                post()

        return notify

    def mark(self, *labels: str) -> None:
        """Runs with news (their message came, or the UI changed them itself)."""
        self._dirty.update(labels)

    def take(self, force: bool = False) -> set[str]:
        """The runs to redraw now: none unless there is news and the pacer allows (or
        `force`)."""
        if not self._dirty or not (force or self.pacer.due()):
            return set()
        dirty, self._dirty = self._dirty, set()
        for label in dirty:
            if label in self._unseen:
                self._unseen[label].clear()
        return dirty
