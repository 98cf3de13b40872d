"""Receiving events: a queue of one's own on the event exchange, read and handed to handlers.

Each event reaches the handlers as Celery's receiver hands it over: its ``clock`` moved
past this process's Lamport clock (a ``task-sent`` event, from a client that never
synchronises, gets one just below it), its ``timestamp`` moved into this time zone, and
``local_received`` set to the time it arrived.

A message that carries no events (not decodable, not an object or an array of objects
with a ``type``, a content type not accepted) is dropped with one log line, and the
receiver goes on. Messages are acked with the next fetch (or on :meth:`close`), which saves
a round trip per batch.

On SQLite and in memory a receiver's queue and binding outlive it (those brokers ignore
``auto_delete``, ``exclusive`` and the queue arguments), so events keep going to it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping

from celeriac.control.clock import LamportClock
from celeriac.events.exchange import EventSettings, declare_exchange, receiver_queue
from celeriac.events.message import (
    PROCESS_CLOCK,
    Event,
    adjust_timestamp,
    decode,
    is_number,
)
from celeriac.protocol import serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.transports.base import Transport
from celeriac.wire.queues import Delivery

logger = logging.getLogger("celeriac.events")

#: Handlers take an event; what they return is ignored.
Handler = Callable[[Event], object]

#: Messages taken from the broker per fetch.
FETCH_LIMIT = 100
#: The longest a fetch waits, so that ``should_stop`` is seen soon after it is set.
_POLL_SECONDS = 1.0
#: Where a ``task-sent`` event goes on the clock: a client never synchronises its clock,
#: so its value means nothing here; the event is placed just before this process's time.
_CLIENT_CLOCK_SKEW = -1


class EventReceiver:
    """Reads the events of the event exchange from a queue of its own.

    Args:
        transport: the broker connection to read with (this receiver's alone).
        handlers: event type → handler; ``"*"`` handles the types without a handler of
            their own.
        routing_key: the binding key of the queue (``#``: every event; ``worker.#``: the
            worker events).
        node_id: the unique part of the queue name (default: a new UUID).
        settings: the exchange, queue and serializer (``EventSettings.from_conf``).
        accept: the serializers (names or content types) events may come in; default
            JSON and ``settings.serializer``.
        clock: the Lamport clock to keep in step (default: the process's).
        limits: bounds on one message.
        owns_transport: :meth:`close` closes ``transport`` too.
    """

    def __init__(
        self,
        transport: Transport,
        handlers: Mapping[str, Handler] | None = None,
        *,
        routing_key: str = "#",
        node_id: str | None = None,
        settings: EventSettings | None = None,
        accept: Iterable[str] | None = None,
        clock: LamportClock | None = None,
        limits: Limits = DEFAULT_LIMITS,
        owns_transport: bool = False,
    ) -> None:
        self.transport = transport
        self.handlers = dict(handlers or {})
        self.node_id = node_id or str(uuid.uuid4())
        self.settings = settings or EventSettings()
        self.queue = receiver_queue(self.settings, transport, self.node_id, routing_key)
        self.accept = serializers.content_types(
            accept if accept is not None else {"json", self.settings.serializer}
        )
        self.clock = clock or PROCESS_CLOCK
        self.limits = limits
        self.owns_transport = owns_transport
        #: Set from any thread (or a handler) to end :meth:`itercapture` soon.
        self.should_stop = False
        self._declared = False
        self._to_ack: list[Delivery] = []
        self._pending: deque[Event] = deque()

    def __repr__(self) -> str:
        return f"<EventReceiver {self.queue.name} on {self.transport!r}>"

    def __enter__(self) -> EventReceiver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def declare(self) -> None:
        """Create the queue and bind it; events sent from then on reach it. Called by the
        first fetch; call it first to be sure of events sent before that."""
        if not self._declared:
            declare_exchange(self.transport, self.settings)
            self.transport.declare([self.queue])
            self._declared = True

    def process(self, event: Event) -> None:
        """Hand ``event`` to the handler of its type, or to ``"*"``'s."""
        handler = self.handlers.get(event["type"]) or self.handlers.get("*")
        if handler is not None:
            handler(event)

    def itercapture(
        self, limit: int | None = None, timeout: float | None = None
    ) -> Iterator[Event]:
        """Handle events as they come and yield each after its handler ran.

        Ends after ``limit`` events, ``timeout`` seconds, or soon after ``should_stop`` is
        set; ``None``: no bound. Events fetched and not handled yet when it ends are
        handled by the next call.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        handled = 0
        while not self.should_stop and (limit is None or handled < limit):
            if not self._pending:
                wait = _POLL_SECONDS if deadline is None else deadline - time.monotonic()
                if wait <= 0:
                    return
                self._pending.extend(self.fetch(min(wait, _POLL_SECONDS)))
                continue
            event = self._pending.popleft()
            self.process(event)
            handled += 1
            yield event

    def capture(self, limit: int | None = None, timeout: float | None = None) -> None:
        """Handle events until ``limit`` events, ``timeout`` seconds or ``should_stop``."""
        for _ in self.itercapture(limit, timeout):
            pass

    def fetch(self, timeout: float) -> list[Event]:
        """The events that arrive within ``timeout`` seconds, without handling them (one
        fetch: empty if none came); the messages they came in are acked with the next."""
        self.declare()
        deliveries = self.transport.fetch([self.queue.name], FETCH_LIMIT, timeout, ack=self._to_ack)
        self._to_ack = deliveries
        return [self._received(event) for delivery in deliveries for event in self._read(delivery)]

    def close(self) -> None:
        """Ack what was fetched; closes the transport if it owns it."""
        acks, self._to_ack = self._to_ack, []
        try:
            if acks:
                self.transport.ack(acks)
        finally:
            if self.owns_transport:
                self.transport.close()

    def _read(self, delivery: Delivery) -> list[Event]:
        try:
            return decode(delivery.envelope, self.accept, self.limits)
        except Exception as exc:  # whatever one message holds, it ends that message alone
            envelope = delivery.envelope
            logger.warning(
                "Dropped an event message from %s (routing key %r, queue %r): %s: %s",
                envelope.headers.get("hostname", "an unknown host"),
                envelope.routing_key,
                delivery.queue,
                type(exc).__name__,
                exc,
            )
            return []

    def _received(self, event: Event) -> Event:
        """``event`` as handlers see it: clock in step, time in this zone, arrival time."""
        clock = event.get("clock")
        if event["type"] == "task-sent":
            event["clock"] = (self.clock.value or 1) + _CLIENT_CLOCK_SKEW
            self.clock.adjust(event["clock"])
        elif is_number(clock):
            self.clock.adjust(int(clock))
        else:
            event["clock"] = self.clock.forward()
        offset, timestamp = event.get("utcoffset"), event.get("timestamp")
        if is_number(offset) and is_number(timestamp):
            event["timestamp"] = adjust_timestamp(float(timestamp), float(offset))
        event["local_received"] = time.time()
        return event
