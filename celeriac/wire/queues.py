"""Queues, deliveries and routing: the vocabulary of every broker connection.

The transports implement it (:class:`celeriac.transports.base.Transport`); the ``rpc://``
result backend uses a part of it (:class:`BrokerConnection`) to send results as messages.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    #: Broker-specific queue arguments (``x-expires``, ``x-queue-type``…): AMQP field values.
    arguments: Mapping[str, Any] = field(default_factory=dict)

    @property
    def binding_key(self) -> str:
        return self.routing_key or self.name


def expiry_arguments(message_ttl: float | None, expires: float | None) -> dict[str, int]:
    """Queue arguments for how long a message may wait and how long an unused queue lives
    (seconds): RabbitMQ's ``x-message-ttl`` and ``x-expires``, in whole milliseconds as
    kombu sets them. Brokers without them ignore them."""
    arguments: dict[str, int] = {}
    if message_ttl is not None:
        arguments["x-message-ttl"] = int(message_ttl * 1000)
    if expires is not None:
        arguments["x-expires"] = int(expires * 1000)
    return arguments


@dataclass(slots=True)
class Delivery:
    """A reserved message. ``tag`` is the transport's handle for ack/reject."""

    envelope: Envelope
    tag: Hashable
    queue: str
    redelivered: bool = False


class BrokerConnection(Protocol):
    """The part of a transport that sends and takes messages, for whoever is not a
    transport but talks through one (the ``rpc://`` result backend).

    :class:`celeriac.transports.base.Transport` has the full contract of each method.
    """

    def declare(self, queues: Sequence[QueueSpec]) -> None: ...

    def publish(self, envelopes: Sequence[Envelope]) -> None: ...

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]: ...

    def ack(self, deliveries: Sequence[Delivery]) -> None: ...

    def close(self) -> None: ...


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
