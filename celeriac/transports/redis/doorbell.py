"""Waiting for work without polling and without taking a message out of Redis first.

``BRPOP`` is the usual way to wait on several lists, but it *removes* the message: if the
consumer dies (or the reply is lost) between the pop and recording the message as held,
the message is gone. celeriac never pops outside its fetch script; to sleep until a list
changes it uses Redis's client-side-caching invalidations instead (Redis >= 6):

* the consumer's connection turns on ``CLIENT TRACKING … REDIRECT <doorbell> NOLOOP`` and
  reads the lengths of the lists it waits on (reads are what Redis tracks);
* any later write to one of them makes Redis send an invalidation message to the doorbell
  connection, subscribed to ``__redis__:invalidate``; the doorbell wakes the fetch, which
  runs its script again.

The same Pub/Sub connection carries fanout exchanges: queues bound to a fanout exchange
``PSUBSCRIBE`` to its channel, and messages received are buffered here until fetched.
When tracking is refused (old server, restricted ACL), waits fall back to short polls.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import time
from collections.abc import Iterator

import redis

from celeriac.transports.base import Delivery
from celeriac.transports.redis import envelope as envelope_codec

logger = logging.getLogger("celeriac.transports.redis")

_INVALIDATE = "__redis__:invalidate"


class Doorbell:
    """A Pub/Sub connection: list-change wake-ups and fanout messages."""

    def __init__(self, pool: redis.ConnectionPool, confirm_timeout: float) -> None:
        # redis-py's annotations differ between its versions: the ignores name both cases.
        self._pubsub = redis.Redis(connection_pool=pool).pubsub()  # type: ignore[no-untyped-call, unused-ignore]
        self._confirm_timeout = confirm_timeout
        # The id is asked before subscribing: afterwards the connection only takes
        # Pub/Sub commands.
        self._pubsub.execute_command("CLIENT", "ID")  # type: ignore[no-untyped-call, unused-ignore]
        connection = self._pubsub.connection
        assert connection is not None
        self.client_id: int = int(connection.read_response())
        self._pubsub.subscribe(_INVALIDATE)
        self._await_confirmation("subscribe", _INVALIDATE)
        #: channel pattern → the local queues it feeds
        self._routes: dict[str, list[str]] = {}
        #: fanout queue → (envelope bytes, …) received and not fetched yet
        self.buffers: dict[str, collections.deque[bytes]] = {}
        self._tags: Iterator[int] = itertools.count(1)

    def subscribe_fanout(self, pattern: str, queue: str) -> None:
        """Start buffering messages published on ``pattern`` for ``queue``."""
        self.buffers.setdefault(queue, collections.deque())
        queues = self._routes.get(pattern)
        if queues is None:
            self._routes[pattern] = [queue]
            self._pubsub.psubscribe(pattern)
            # Wait for the confirmation: a message published afterwards is then ours.
            self._await_confirmation("psubscribe", pattern)
        elif queue not in queues:
            queues.append(queue)

    def wait(self, timeout: float) -> None:
        """Sleep until something arrives on the connection or ``timeout`` passes."""
        connection = self._pubsub.connection
        assert connection is not None
        if connection.can_read(timeout=max(timeout, 0.0)):
            self.drain()

    def drain(self) -> None:
        """Read everything already received: buffer fanout messages, drop the rest."""
        connection = self._pubsub.connection
        assert connection is not None
        while connection.can_read(timeout=0):
            self._handle(self._pubsub.get_message(timeout=0.0))

    def take_fanout(self, queues: list[str], limit: int) -> list[Delivery]:
        """Up to ``limit`` buffered fanout messages of ``queues``."""
        self.drain()
        deliveries: list[Delivery] = []
        for queue in queues:
            buffer = self.buffers.get(queue)
            while buffer and len(deliveries) < limit:
                tag = ("fanout", next(self._tags))
                try:
                    envelope, redelivered = envelope_codec.decode(buffer.popleft())
                except Exception as exc:  # this broadcast copy only: nothing holds it
                    logger.error("Dropped broadcast message %s for queue %r: %s", tag, queue, exc)
                    continue
                deliveries.append(Delivery(envelope, tag, queue, redelivered))
        return deliveries

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):  # a broken connection: nothing to release
            self._pubsub.close()

    def _handle(self, message: dict[str, object] | None) -> None:
        # Invalidations come back as None (redis-py has no handler for them): they only
        # had to wake us up.
        if message is None or message.get("type") != "pmessage":
            return
        pattern = message["pattern"]
        data = message["data"]
        if not isinstance(pattern, bytes) or not isinstance(data, bytes):
            return
        for queue in self._routes.get(pattern.decode(), ()):
            self.buffers[queue].append(data)

    def _await_confirmation(self, kind: str, name: str) -> None:
        deadline = time.monotonic() + self._confirm_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is None:
                continue
            channel = message.get("channel")
            if message.get("type") == kind and channel in (name, name.encode()):
                return
            self._handle(message)
        raise redis.TimeoutError(f"no confirmation of {kind} {name!r} from Redis")
