"""The logical clock Celery's nodes stamp on remote-control (and event) messages."""

from __future__ import annotations

import threading


class LamportClock:
    """A Lamport clock: the ``clock`` header of Celery's control and event messages.

    Sending moves it one tick forward; receiving moves it past the value received, so the
    value a node reports (``inspect().clock()``) is later than every message it has seen,
    whichever node sent it. Thread-safe: a node answers while the process sends.
    """

    def __init__(self, value: int = 0) -> None:
        self._value = value
        self._lock = threading.Lock()

    @property
    def value(self) -> int:
        return self._value

    def forward(self) -> int:
        """Tick for a message about to be sent; the value to stamp on it."""
        with self._lock:
            self._value += 1
            return self._value

    def adjust(self, other: int) -> int:
        """Take in the value of a message received."""
        with self._lock:
            self._value = max(self._value, other) + 1
            return self._value
