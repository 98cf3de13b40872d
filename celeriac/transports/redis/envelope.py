"""kombu's Redis message format: one JSON document per message.

``{"body": <base64>, "content-encoding", "content-type", "headers": {…}, "properties":
{…, "delivery_info": {"exchange", "routing_key"}, "priority", "body_encoding": "base64",
"delivery_tag": <uuid4>}}``. A message put back after its consumer died or let it go has
``headers.redelivered`` and ``properties.delivery_info.redelivered`` set to true, as kombu
does when it restores one.

On the way in, the transport's own fields (``delivery_info``, ``body_encoding``,
``delivery_tag``, the ``redelivered`` header) are taken out of the envelope: the exchange
and routing key go to :class:`Envelope` fields, redelivery to the delivery.
"""

from __future__ import annotations

import binascii
import itertools
import json
import logging
import os
from typing import Any

import orjson

from celeriac.exceptions import DecodeError
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.message import Envelope
from celeriac.protocol.serializers import json_dumps, json_loads, json_parse, plain_mapping

logger = logging.getLogger("celeriac.transports.redis")


class Encoder:
    """Turns envelopes into the JSON documents kombu consumers read.

    kombu gives every message a ``delivery_tag`` (a uuid4 string; kombu consumers key their
    unacked hash by it). A random uuid4 per message costs as much as the rest of the
    encoding, so tags here are a random prefix per encoder (74 random bits) plus a counter,
    still in uuid4 form. Create one encoder per process: a forked child needs its own.
    """

    def __init__(self) -> None:
        random = os.urandom(10).hex()
        variant = "89ab"[int(random[12], 16) & 3]
        self._prefix = f"{random[:8]}-{random[8:12]}-4{random[13:16]}-{variant}{random[17:20]}-"
        self._counter = itertools.count(1)

    def __call__(self, envelope: Envelope) -> bytes:
        properties = envelope.properties.copy()
        properties["delivery_info"] = {
            "exchange": envelope.exchange,
            "routing_key": envelope.routing_key,
        }
        properties["priority"] = properties.get("priority") or 0
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = f"{self._prefix}{next(self._counter) & _TAG_MASK:012x}"
        document = {
            "body": binascii.b2a_base64(envelope.body, newline=False).decode("ascii"),
            "content-encoding": envelope.content_encoding,
            "content-type": envelope.content_type,
            "headers": envelope.headers,
            "properties": properties,
        }
        if envelope.plain or (
            plain_mapping(envelope.headers) and plain_mapping(envelope.properties)
        ):
            # Nothing kombu's JSON would tag (no UUID, datetime, bytes...): plain orjson.
            # Measured: the generic json_dumps walk costs more than the encoding itself.
            try:
                return orjson.dumps(document)
            except orjson.JSONEncodeError:  # an int beyond 64 bits: json_dumps knows how
                pass
        return json_dumps(document)


_TAG_MASK = (1 << 48) - 1


def decode(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> tuple[Envelope, bool]:
    """The envelope in ``raw`` and whether it was delivered before.

    Raises nothing: an entry that is not a kombu message (not JSON, no ``properties``
    object, fields of the wrong type, over ``limits.max_message_bytes`` or nested deeper
    than the JSON reader allows) comes back as an envelope with the raw bytes as its body
    and no headers, so the worker rejects it with a clear error instead of the transport
    losing it silently.
    """
    try:
        return _decode(raw, limits)
    except DecodeError as exc:
        logger.warning("Redis message is not a kombu envelope (%s): %r", exc, raw[:200])
        return Envelope(raw, {}, {}, "application/data", "binary"), False


def _decode(raw: bytes, limits: Limits) -> tuple[Envelope, bool]:
    if len(raw) > limits.max_message_bytes:
        raise DecodeError(f"{len(raw)} bytes, over max_message_bytes={limits.max_message_bytes}")
    document = json_loads(raw, limits)
    if not isinstance(document, dict):
        raise DecodeError(f"a JSON {type(document).__name__}, not an object")
    properties = document.get("properties")
    if not isinstance(properties, dict):
        raise DecodeError("no properties object")
    info = properties.pop("delivery_info", None) or _NO_INFO
    if not isinstance(info, dict):
        raise DecodeError("delivery_info is not an object")
    body_encoding = properties.pop("body_encoding", "base64")
    properties.pop("delivery_tag", None)
    headers = document.get("headers") or {}
    if not isinstance(headers, dict):
        raise DecodeError("headers is not an object")
    redelivered = bool(headers.pop("redelivered", False) or info.get("redelivered"))
    envelope = Envelope(
        _body(document.get("body"), body_encoding),
        headers,
        properties,
        _text(document.get("content-type"), "content-type") or "application/data",
        _text(document.get("content-encoding"), "content-encoding") or "binary",
        _text(info.get("exchange"), "exchange"),
        _text(info.get("routing_key"), "routing_key"),
    )
    return envelope, redelivered


def _body(body: Any, encoding: Any) -> bytes:
    if not body:
        return b""
    if not isinstance(body, str):
        raise DecodeError(f"body is {type(body).__name__}, not a string")
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        return body.encode("utf-8")
    except ValueError as exc:  # binascii.Error, non-ASCII base64, a lone surrogate
        raise DecodeError(f"body cannot be read as {encoding}: {exc}") from exc


def _text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError(f"{name} is {type(value).__name__}, not a string")
    return value


_NO_INFO: dict[str, Any] = {}


def mark_redelivered(raw: bytes, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """``raw`` with kombu's two redelivered flags set.

    Raises nothing: ``raw`` comes back unchanged when it has no place for the flags (not
    JSON, over a limit, no ``properties`` object, ``headers`` or ``delivery_info`` not
    objects) or cannot be written back (nested deeper than orjson writes). The document is
    read and written by the same JSON library, so that what only Python's json keeps
    (integers beyond 64 bits, NaN) stays as it was; kombu's tags are left as they are.
    """
    if len(raw) > limits.max_message_bytes:
        return raw
    try:
        document, by_orjson = json_parse(raw, limits)
    except DecodeError:
        return raw
    if not isinstance(document, dict):
        return raw
    properties = document.get("properties")
    if not isinstance(properties, dict):
        return raw
    headers = document.get("headers") or {}
    info = properties.get("delivery_info") or {}
    if not isinstance(headers, dict) or not isinstance(info, dict):
        return raw
    headers["redelivered"] = info["redelivered"] = True
    document["headers"] = headers
    properties["delivery_info"] = info
    if not by_orjson:
        return json.dumps(document, separators=(",", ":")).encode("ascii")
    try:
        return orjson.dumps(document)
    except orjson.JSONEncodeError:
        return raw
