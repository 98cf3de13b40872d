"""Where events travel: the event exchange, its type on each broker, and receivers' queues.

As in Celery: the exchange (``event_exchange``, ``celeryev``) is a durable topic exchange,
except on Redis, where it is fanout (Pub/Sub channels ``/<db>.celeryev/<routing key>``).
Each receiver has a queue of its own, ``<event_queue_prefix>.<node id>``, bound to it with
``#`` (every event), exclusive and auto-delete by default, whose messages live
``event_queue_ttl`` seconds and which the broker deletes ``event_queue_expires`` seconds
after its last use (RabbitMQ's ``x-message-ttl`` and ``x-expires``; other brokers ignore
them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import Transport
from celeriac.wire.queues import QueueSpec, expiry_arguments

_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+socket"})
_AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})


@dataclass(frozen=True, slots=True)
class EventSettings:
    """The ``event_*`` settings, Celery's defaults."""

    exchange: str = "celeryev"
    serializer: str = "json"
    queue_prefix: str = "celeryev"
    #: Seconds a message waits in a receiver's queue before the broker drops it.
    queue_ttl: float | None = 5.0
    #: Seconds after its last use the broker deletes a receiver's queue.
    queue_expires: float | None = 60.0
    queue_exclusive: bool = True
    queue_durable: bool = False

    def __post_init__(self) -> None:
        if self.queue_exclusive and self.queue_durable:
            raise ImproperlyConfigured(
                "event_queue_exclusive and event_queue_durable are both set: an exclusive "
                "queue dies with its connection, choose one"
            )

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> EventSettings:
        """From an app's settings (``app.conf``)."""
        return cls(
            exchange=str(conf["event_exchange"]),
            serializer=str(conf["event_serializer"]),
            queue_prefix=str(conf["event_queue_prefix"]),
            queue_ttl=_seconds(conf["event_queue_ttl"]),
            queue_expires=_seconds(conf["event_queue_expires"]),
            queue_exclusive=bool(conf["event_queue_exclusive"]),
            queue_durable=bool(conf["event_queue_durable"]),
        )


def exchange_type(transport: Transport) -> str:
    """``fanout`` on Redis, ``topic`` elsewhere: the type Celery gives the event exchange
    for this broker (kombu's topic routing on Redis would fill lists nobody reads)."""
    return "fanout" if urlsplit(transport.url).scheme in _REDIS_SCHEMES else "topic"


def receiver_queue(
    settings: EventSettings, transport: Transport, node_id: str, routing_key: str = "#"
) -> QueueSpec:
    """The queue of one receiver, declared as Celery's ``EventReceiver`` declares it."""
    return QueueSpec(
        f"{settings.queue_prefix}.{node_id}",
        exchange=settings.exchange,
        exchange_type=exchange_type(transport),
        routing_key=routing_key,
        durable=settings.queue_durable,
        auto_delete=not settings.queue_durable,
        exclusive=settings.queue_exclusive,
        arguments=expiry_arguments(settings.queue_ttl, settings.queue_expires),
    )


def declare_exchange(transport: Transport, settings: EventSettings) -> None:
    """Make the event exchange exist, durable, on brokers that need that before a publish.

    A RabbitMQ channel that publishes to a missing exchange is closed by the broker, and
    Celery declares ``celeryev`` durable: a peer's declare fails if it exists transient.
    The transport interface declares exchanges only with a queue, whose ``durable`` flag
    the exchange takes; so an exclusive queue of this connection, bound with a key no event
    has, declares it. Other brokers route an event to no queue until a receiver binds one,
    which is all the exchange does there.
    """
    if urlsplit(transport.url).scheme not in _AMQP_SCHEMES:
        return
    name = f"celeriac.{settings.exchange}.declared.{uuid.uuid4().hex}"
    transport.declare(
        [
            QueueSpec(
                name,
                exchange=settings.exchange,
                exchange_type="topic",
                routing_key=name,
                durable=True,
                auto_delete=True,
                exclusive=True,
            )
        ]
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
