"""What a task message says about itself in its headers and properties, as pure functions.

The consumer asks these questions before it holds or dispatches a message, and the
executor before it runs one, so both read a message the same way. Clocks and settings come
in as arguments. Header values come from any producer, so every function takes values of
any type: what it cannot read raises :class:`~celeriac.exceptions.InvalidMessageError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celeriac.exceptions import InvalidMessageError
from celeriac.protocol.message import parse_datetime

#: How many times a message was delivered to a process that died running it.
LOST_HEADER = "x-celeriac-lost"


def time_limits(headers: Mapping[str, object]) -> tuple[float | None, float | None]:
    """``(hard, soft)`` seconds from the ``timelimit`` header (either may be None)."""
    value: Any = headers.get("timelimit")
    if not value:
        return None, None
    try:
        hard, soft = value
        return (
            None if hard is None else float(hard),
            None if soft is None else float(soft),
        )
    except (TypeError, ValueError):
        raise InvalidMessageError(
            f"bad timelimit header {value!r}: expected [hard, soft] in seconds"
        ) from None


def is_expired(headers: Mapping[str, object], now: float) -> bool:
    """Whether the ``expires`` header is at or before ``now`` (seconds since the epoch)."""
    value = headers.get("expires")
    if not value:
        return False
    try:
        expires = parse_datetime(value)
    except InvalidMessageError as exc:
        raise InvalidMessageError(f"bad expires header: {exc}") from None
    return expires is not None and expires.timestamp() <= now


def eta_timestamp(headers: Mapping[str, object]) -> float | None:
    """When the message may run (seconds since the epoch), from its ``eta`` header."""
    value = headers.get("eta")
    if not value:
        return None
    eta = parse_datetime(value)
    return None if eta is None else eta.timestamp()


def times_lost(headers: Mapping[str, object]) -> int:
    """How many processes this message has killed (``LOST_HEADER``; 0 when absent)."""
    value = headers.get(LOST_HEADER)
    return value if type(value) is int and value > 0 else 0


def reply_extra(properties: Mapping[str, object], needs_reply_to: bool) -> dict[str, object] | None:
    """The ``extra`` of a meta stored outside a task run (expired, lost, unknown task): the
    message's ``reply_to`` when the result backend sends results there (``rpc://``)."""
    reply_to = properties.get("reply_to")
    if reply_to and needs_reply_to:
        return {"reply_to": reply_to}
    return None


def request_from_headers(
    headers: Mapping[str, object],
    properties: Mapping[str, object],
    embed: Mapping[str, object],
    delivery_info: Mapping[str, object],
) -> dict[str, object]:
    """The ``task.request`` values of a message: every header, plus what Celery adds."""
    request = dict(headers)
    request.update(
        retries=headers.get("retries") or 0,
        callbacks=embed.get("callbacks"),
        errbacks=embed.get("errbacks"),
        chain=embed.get("chain"),
        chord=embed.get("chord"),
        delivery_info=delivery_info,
        reply_to=properties.get("reply_to"),
        correlation_id=properties.get("correlation_id"),
        priority=properties.get("priority"),
        properties=properties,
        headers=headers,
        is_eager=False,
    )
    return request
