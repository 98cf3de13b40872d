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
import itertools
import logging
import time
from collections.abc import Iterator

import redis

from celeriac.transports.redis import envelope as envelope_codec
from celeriac.wire.queues import Delivery
from celeriac.wire.redis.pubsub import Push, Subscriber, text

logger = logging.getLogger("celeriac.transports.redis")

_INVALIDATE = "__redis__:invalidate"


class Doorbell:
    """A Pub/Sub connection: list-change wake-ups and fanout messages."""

    def __init__(self, pool: redis.ConnectionPool, confirm_timeout: float) -> None:
        self._subscriber = Subscriber(pool)
        self._confirm_timeout = confirm_timeout
        #: channel pattern → the local queues it feeds
        self._routes: dict[str, list[str]] = {}
        #: fanout queue → (envelope bytes, …) received and not fetched yet
        self.buffers: dict[str, collections.deque[bytes]] = {}
        self._tags: Iterator[int] = itertools.count(1)
        try:
            # Asked before subscribing: afterwards the connection only takes Pub/Sub commands.
            self.client_id = int(self._subscriber.call("CLIENT", "ID"))
            self._subscribe([_INVALIDATE], patterns=False)
        except BaseException:
            self._subscriber.close()
            raise

    def subscribe_fanout(self, pattern: str, queue: str) -> None:
        """Start buffering messages published on ``pattern`` for ``queue``."""
        self.buffers.setdefault(queue, collections.deque())
        queues = self._routes.get(pattern)
        if queues is None:
            self._routes[pattern] = [queue]
            self._subscribe([pattern], patterns=True)
        elif queue not in queues:
            queues.append(queue)

    def wait(self, timeout: float) -> None:
        """Sleep until something arrives on the connection or ``timeout`` passes."""
        push = self._subscriber.next_push(max(timeout, 0.0))
        if push is not None:
            self._handle(push)
            self.drain()

    def drain(self) -> None:
        """Read everything already received: buffer fanout messages, drop the rest."""
        while (push := self._subscriber.next_push(0.0)) is not None:
            self._handle(push)

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
        self._subscriber.close()

    def _handle(self, push: Push) -> None:
        # Invalidations (``message`` on the invalidation channel) only had to wake us up.
        if text(push[0]) != "pmessage":
            return
        _, pattern, _, data = push
        if isinstance(data, bytes):
            for queue in self._routes.get(text(pattern), ()):
                self.buffers[queue].append(data)

    def _subscribe(self, names: list[str], patterns: bool) -> None:
        """Subscribe and wait for the confirmation: a message published afterwards is ours."""
        deadline = time.monotonic() + self._confirm_timeout
        if not self._subscriber.subscribe(names, deadline, patterns=patterns, on_push=self._handle):
            kind = "psubscribe" if patterns else "subscribe"
            raise redis.TimeoutError(f"no confirmation of {kind} {names[0]!r} from Redis")
