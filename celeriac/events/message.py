"""Event messages as Celery sends them. No I/O.

An event is a JSON object with a ``type`` (``task-succeeded``, ``worker-heartbeat``; the
part before the first ``-`` is its *group*) and the fields every sender stamps on it:
``hostname``, ``timestamp`` (Unix time), ``utcoffset`` (hours *west* of UTC, as Python's
``time.timezone``), ``pid`` and ``clock``. One message carries one event, routed by its
type with ``-`` turned into ``.`` (``task.succeeded``), or a batch of one group as a JSON
array, routed ``<group>.multi``. Messages are transient, with the sender's node name in a
``hostname`` header.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypeGuard

from celeriac.control.clock import LamportClock
from celeriac.exceptions import DecodeError
from celeriac.protocol import serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.message import Envelope

#: One event: its ``type`` and its fields, as they travel (JSON values).
Event: TypeAlias = dict[str, Any]

#: AMQP's transient delivery mode: events are not worth a disk write on the broker.
TRANSIENT = 1


#: Every dispatcher and receiver of a process shares this clock unless given another, so
#: what the process sends is ordered after what it has seen (one Lamport node per process).
PROCESS_CLOCK = LamportClock()


def utcoffset() -> float:
    """Hours west of UTC here and now, the value of an event's ``utcoffset`` (exact, so a
    zone half an hour off keeps its half)."""
    return (time.altzone if time.localtime().tm_isdst else time.timezone) / 3600


def adjust_timestamp(timestamp: float, offset: float) -> float:
    """An event's ``timestamp`` moved from its sender's time zone (``offset``) to ours."""
    return timestamp - (offset - utcoffset()) * 3600


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether an event's field holds a number (JSON's ``true`` is no number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def group_of(event_type: str) -> str:
    """``task`` for ``task-sent``: the part of a type before its first ``-``."""
    return event_type.split("-", 1)[0]


def routing_key_of(event_type: str) -> str:
    """``task.sent`` for ``task-sent``."""
    return event_type.replace("-", ".")


def multi_routing_key(group: str) -> str:
    """The routing key of a batch of one group's events (``task.multi``)."""
    return f"{group}.multi"


def encode(
    payload: Event | Sequence[Event],
    *,
    hostname: str,
    exchange: str,
    routing_key: str,
    serializer: str = "json",
) -> Envelope:
    """The message carrying one event, or a batch of events as an array."""
    value = payload if isinstance(payload, Mapping) else list(payload)
    content_type, content_encoding, body = serializers.dumps(value, serializer)
    return Envelope(
        body,
        {"hostname": hostname},
        {"delivery_mode": TRANSIENT},
        content_type,
        content_encoding,
        exchange=exchange,
        routing_key=routing_key,
        plain=True,
    )


def decode(
    envelope: Envelope, accept: frozenset[str] | None = None, limits: Limits = DEFAULT_LIMITS
) -> list[Event]:
    """The events a message carries: its body is one event or an array of them.

    Raises :class:`~celeriac.exceptions.ContentDisallowed` for a content type not in
    ``accept``, and :class:`~celeriac.exceptions.DecodeError` for a body over the size
    limit, one that does not decode, and one that is not an event or an array of events
    (JSON objects with a string ``type``).
    """
    if len(envelope.body) > limits.max_message_bytes:
        raise DecodeError(f"event message of {len(envelope.body)} bytes is over the limit")
    value = serializers.loads(envelope.body, envelope.content_type, accept, limits=limits)
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not isinstance(item, dict):
            raise DecodeError(f"an event is a mapping, not {type(item).__name__}")
        if not isinstance(item.get("type"), str):
            raise DecodeError("an event without a type")
    return items
