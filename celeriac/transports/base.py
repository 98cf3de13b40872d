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
* An instance is used by one thread at a time, and by the process that created it: after a
  fork the child creates its own.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from celeriac.protocol.message import Envelope


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue, the exchange it is bound to and how (Celery's ``Queue`` as plain data)."""

    name: str
    exchange: str = ""
    exchange_type: str = "direct"
    routing_key: str = ""
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    max_priority: int | None = None
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def binding_key(self) -> str:
        return self.routing_key or self.name


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport can do, known when it is created rather than when a call fails."""

    #: Messages of higher priority are fetched first.
    priorities: bool = False
    #: Several processes (and machines, for network brokers) can share the queues.
    cross_process: bool = False
    #: Fanout exchanges deliver to every bound queue (broadcast for control and events).
    fanout: bool = False
    #: Reserved messages come back only when their holder is gone (never by a timeout).
    liveness_redelivery: bool = True


@dataclass(slots=True)
class Delivery:
    """A reserved message. ``tag`` is the transport's handle for ack/reject."""

    envelope: Envelope
    tag: Hashable
    queue: str
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Settings a transport is created with (from the app's ``broker_*`` settings)."""

    transport_options: Mapping[str, Any] = field(default_factory=dict)
    connection_timeout: float = 4.0
    connection_retry: bool = True
    connection_max_retries: int | None = 100
    heartbeat: float = 120.0
    pool_limit: int = 10


@runtime_checkable
class Transport(Protocol):
    """A broker connection. See the module docstring for the contract."""

    url: str
    capabilities: Capabilities

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

    def purge(self, queue: str) -> int:
        """Drop every ready message of the queue; return how many."""
        ...

    def size(self, queue: str) -> int:
        """Number of ready (not reserved) messages in the queue."""
        ...

    def close(self) -> None:
        """Release the connection; messages still reserved by it come back to their queues."""


def binding_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a message published with ``routing_key`` reaches a queue bound with ``binding_key``.

    AMQP semantics, for transports that route by themselves: ``fanout`` matches everything,
    ``topic`` matches dot-separated words where ``*`` is exactly one word and ``#`` is zero or
    more words, and ``direct`` (the default) needs the keys to be equal.
    """
    if exchange_type == "fanout":
        return True
    if exchange_type == "topic":
        return _topic_matches(binding_key, routing_key)
    return binding_key == routing_key


def bound_queues(
    exchange_type: str, bindings: Sequence[tuple[str, str]], routing_key: str
) -> list[str]:
    """The queues, each once, that ``bindings`` (``(binding_key, queue)`` pairs) route to."""
    matched = [
        queue
        for binding_key, queue in bindings
        if binding_matches(exchange_type, binding_key, routing_key)
    ]
    return list(dict.fromkeys(matched))


@functools.lru_cache(maxsize=4096)
def _topic_matches(pattern: str, routing_key: str) -> bool:
    # Cached: the same few binding patterns meet the same task routing keys over and over.
    return _words_match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _words_match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])
