"""Per-task rate limits (``Task.rate_limit``, ``task_default_rate_limit``), per worker.

As in Celery, a limit is ``"100/s"``, ``"10/m"``, ``"1000/h"`` or a number (per second),
applies to one worker (not the whole cluster), and delays tasks rather than dropping them: a
task over its limit waits in the worker until a token is free.
"""

from __future__ import annotations

import time

from celeriac.exceptions import ImproperlyConfigured

_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float:
    """Tasks per second; 0 means no limit."""
    if rate is None or rate == "":
        return 0.0
    if isinstance(rate, int | float):
        return float(rate)
    count, _, unit = str(rate).partition("/")
    try:
        return float(count) / _PER[unit or "s"]
    except (KeyError, ValueError):
        raise ImproperlyConfigured(
            f"bad rate limit {rate!r}: use a number per second or 'N/s', 'N/m', 'N/h'"
        ) from None


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> float:
        """Take a token: 0.0 when one was free, else seconds until one is (nothing taken)."""
        now = time.monotonic()
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
