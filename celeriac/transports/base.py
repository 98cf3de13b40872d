"""The transport interface: what the client and the worker need from a broker, and no more.

Every method takes or returns a *batch*, so a transport can move many messages per round
trip (one SQL statement, one Redis pipeline or Lua call, one AMQP multiple-ack). All
implementations pass the same conformance suite, ``tests/conformance/test_transport.py``.

Contract, shared by every implementation:

* ``publish`` routes each envelope by its ``exchange`` and ``routing_key``: the default
  exchange ``""`` delivers to the queue named by the routing key; a named exchange delivers
  to the queues bound to it (``declare``). Queues come into being when first declared or
  published to.
* ``fetch`` *reserves* up to ``limit`` messages from the given queues (higher priority
  first, then FIFO) and returns them as :class:`Delivery` values; it waits up to ``timeout``
  seconds when none is ready and returns an empty list after that. A reserved message is
  invisible to other consumers until it is acked or rejected.
* Delivery is at-least-once: a reserved message that is never acked comes back to its queue
  (``redelivered=True``) when its holder is gone — closed without acking, or dead. It never
  comes back merely because it has been held for a long time.
* ``ack`` removes messages for good; ``reject(requeue=True)`` puts them back on their
  queue, ``reject(requeue=False)`` drops them. Both are idempotent.
* ``dead_letter`` moves messages that cannot be processed to their queue's dead-letter
  queue (``<queue>.dead``, :func:`dead_letter_queue`), with the reason in the
  ``x-celeriac-dead-reason`` header, where an operator can inspect them. A message the
  transport itself cannot decode never becomes a :class:`Delivery`: ``fetch`` logs it and
  moves it there as it arrived.
* An instance is used by one thread at a time, and by the process that created it: after a
  fork the child creates its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from celeriac.exceptions import OperationalError
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.message import Envelope
from celeriac.wire.queues import Delivery, QueueSpec

logger = logging.getLogger("celeriac.transport")


class BrokerStorageFull(OperationalError):
    """The broker cannot store more for now (its disk is full): nothing of the call was
    done, and the same call may succeed once there is room again."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, known when it is created rather than when a call fails."""

    #: Messages of higher priority are fetched first.
    priorities: bool = False
    #: Several processes (and machines, for network brokers) can share the queues.
    cross_process: bool = False
    #: Fanout exchanges deliver to every bound queue (broadcast for control and events).
    fanout: bool = False


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Settings a transport is created with (from the app's ``broker_*`` settings)."""

    transport_options: Mapping[str, Any] = field(default_factory=dict)
    connection_timeout: float = 4.0
    connection_retry: bool = True
    connection_max_retries: int | None = 100
    heartbeat: float = 120.0
    pool_limit: int = 10
    #: Bounds on what the transport decodes from one message.
    limits: Limits = DEFAULT_LIMITS


@runtime_checkable
class Transport(Protocol):
    """A broker connection. See the module docstring for the contract."""

    url: str
    capabilities: Capabilities

    def on_void(self, callback: Callable[[], None]) -> None:
        """Have ``callback`` called, in the thread using the transport, as soon as every
        message handed out and not settled has gone back to the broker (a lost AMQP
        connection), before any reconnecting: those deliveries can be neither acked nor
        rejected any more, and their messages come again. Brokers that keep reserved
        messages with their holder across reconnects (SQLite, Redis) never call it."""

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        """Create the queues (and their exchanges and bindings) if they do not exist."""

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Route and store every envelope; return when the broker has them."""

    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        """Reserve up to ``limit`` messages, waiting up to ``timeout`` seconds for one.

        ``ack``: deliveries to acknowledge first, in the same round trip where the broker
        allows (a consumer settles what it finished and takes more in one go).
        """
        ...

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good."""

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        """Put the messages back on their queues (``requeue``) or drop them."""

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        """Move each message, with its reason, to its dead-letter queue (a copy there, then
        the ack: a message acked already gets its copy all the same)."""

    def purge(self, queue: str) -> int:
        """Drop every ready message of the queue; return how many."""
        ...

    def size(self, queue: str) -> int:
        """Number of ready (not reserved) messages in the queue."""
        ...

    def close(self) -> None:
        """Release the connection; messages still reserved by it come back to their queues."""


#: The header that says why a message was dead-lettered.
DEAD_REASON_HEADER = "x-celeriac-dead-reason"


def dead_letter_queue(queue: str) -> str:
    """Where the messages of ``queue`` that cannot be processed go."""
    return f"{queue}.dead"


def log_dead_letter(message: str, queue: str, error: BaseException | str) -> str:
    """Log the one line that says a message was dead-lettered, which and why; the reason."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    logger.error(
        "Dead-lettered message %s from queue %r to %r: %s",
        message,
        queue,
        dead_letter_queue(queue),
        reason,
    )
    return reason


def dead_letter_by_publishing(transport: Transport, items: Sequence[tuple[Delivery, str]]) -> None:
    """``dead_letter`` for any transport: a copy to the dead-letter queue, then the ack.

    Not atomic: a crash in between leaves the message in both places, never in neither.
    """
    if not items:
        return
    queues = {dead_letter_queue(delivery.queue) for delivery, _ in items}
    transport.declare([QueueSpec(name) for name in sorted(queues)])
    transport.publish(
        [
            copy_to(delivery, dead_letter_queue(delivery.queue), {DEAD_REASON_HEADER: reason})
            for delivery, reason in items
        ]
    )
    transport.ack([delivery for delivery, _ in items])


def copy_to(delivery: Delivery, queue: str, headers: Mapping[str, Any]) -> Envelope:
    """The message with ``headers`` added, sent straight to ``queue`` (through the default
    exchange: its own exchange could route the copy to other queues as well)."""
    envelope = delivery.envelope
    return Envelope(
        envelope.body,
        {**envelope.headers, **headers},
        dict(envelope.properties),
        envelope.content_type,
        envelope.content_encoding,
        exchange="",
        routing_key=queue,
    )
