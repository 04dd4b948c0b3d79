"""Messages a training worker posts to the dashboard.

Progress coalesces: a pending RunUpdated is dropped when a newer one for the same
run is queued, so a fast run never floods the UI; it only says "look again", the
numbers themselves are read from the run's state on the next redraw. RunEnded is
a lifecycle message and is never dropped.
"""

from __future__ import annotations

from textual.message import Message


class RunUpdated(Message):
    """The run labelled `label` has new numbers."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated) and message.label == self.label


class RunEnded(Message):
    """The run labelled `label` ended (its folder is complete)."""

    def __init__(self, label: str, status: str, error: str | None = None) -> None:
        super().__init__()
        self.label = label
        self.status = status  # completed | interrupted | failed
        self.error = error  # one line, for a failed run
