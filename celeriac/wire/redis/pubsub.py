"""Pub/Sub on a connection of its own: subscribe, then read what Redis pushes.

Two users: the result backend's ``wait`` (``SUBSCRIBE`` to result channels, one subscriber
per thread kept between waits, so a wait costs a round trip and not a new connection) and
the broker's doorbell (``SUBSCRIBE`` to client-tracking invalidations, ``PSUBSCRIBE`` to
fanout exchanges). Commands go out and pushes come in through a
:class:`~celeriac.wire.redis.commands.Wire`, as raw replies: ``[b"message", channel,
data]``, ``[b"pmessage", pattern, channel, data]``, ``[b"subscribe", channel, count]``…
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection

import redis

from celeriac.wire.redis.commands import Arg, Reply, Wire
from celeriac.wire.redis.connection import RETRYABLE

#: A push as read off the connection.
Push = list[Reply]

#: Each read for a confirmation waits at least this long, so that a subscription asked
#: for as its deadline passes still has a moment to be confirmed.
_MIN_CONFIRM_WAIT = 0.05
#: One read of a wait without a deadline; the caller reads again after it.
_FOREVER = 3600.0


class Subscriber:
    """A connection checked out of ``pool`` for Pub/Sub, used by one thread at a time.

    Any error on it sets ``broken``: its owner then closes it and makes a new one.
    """

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._connection = pool.get_connection()
        self._wire = Wire(self._connection)
        self.pid = os.getpid()
        self.broken = False

    def call(self, *args: Arg) -> Reply:
        """A plain command and its reply: only before the first subscription, after which
        the connection takes Pub/Sub commands only."""
        try:
            return self._wire.call(*args)
        except BaseException:
            self.broken = True
            raise

    def subscribe(
        self,
        names: Collection[str],
        deadline: float | None,
        *,
        patterns: bool = False,
        on_push: Callable[[Push], None] | None = None,
    ) -> bool:
        """``SUBSCRIBE`` to channels (``PSUBSCRIBE`` to ``patterns``) and read until Redis
        confirmed each one, so that whatever is published afterwards comes here.

        Other pushes read meanwhile go to ``on_push`` (dropped without one). Returns False
        when ``deadline`` passed first.
        """
        kind = "psubscribe" if patterns else "subscribe"
        self._send(kind.upper(), *names)
        waiting = set(names)
        while waiting:
            timeout = None
            if deadline is not None:
                timeout = max(deadline - time.monotonic(), _MIN_CONFIRM_WAIT)
            push = self.next_push(timeout)
            if push is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
            elif text(push[0]) == kind:
                waiting.discard(text(push[1]))
            elif on_push is not None:
                on_push(push)
        return True

    def unsubscribe(self, names: Collection[str]) -> None:
        """``UNSUBSCRIBE`` without waiting: its confirmations, and messages already on
        their way, come before anything a later read waits for, and are skipped there."""
        if not self.broken:
            with contextlib.suppress(*RETRYABLE):
                self._send("UNSUBSCRIBE", *names)

    def next_push(self, timeout: float | None) -> Push | None:
        """The next push, or ``None`` after ``timeout`` seconds (``None``: an hour)."""
        try:
            push: Push | None = self._wire.receive(_FOREVER if timeout is None else timeout)
        except BaseException:
            self.broken = True
            raise
        return push

    def close(self) -> None:
        """Disconnect and give the connection back (a forked child leaves it alone: the
        socket is its parent's)."""
        if self.pid != os.getpid():
            return
        with contextlib.suppress(redis.RedisError):  # already broken: nothing to release
            self._connection.disconnect()  # type: ignore[no-untyped-call, unused-ignore]
        self._pool.release(self._connection)

    def _send(self, *args: Arg) -> None:
        try:
            self._wire.send(*args)
        except BaseException:
            self.broken = True
            raise


def text(value: bytes | str) -> str:
    """A channel or push kind as text (bytes unless the pool decodes responses)."""
    return value.decode() if isinstance(value, bytes) else value
