"""An envelope as the in-process and SQLite brokers store it: the body, and the rest.

Everything of an envelope but its body goes into one JSON blob beside the body: no base64,
one field to decode, and the same JSON limits as a real broker. (Redis keeps kombu's own
JSON document instead, so that kombu peers read it: ``transports/redis/envelope.py``.)
"""

from __future__ import annotations

import orjson

from celeriac.protocol.message import Envelope


def encode_meta(envelope: Envelope) -> bytes:
    """Everything of an envelope but its body, as one JSON blob."""
    return orjson.dumps(
        [
            envelope.headers,
            envelope.properties,
            envelope.content_type,
            envelope.content_encoding,
            envelope.exchange,
            envelope.routing_key,
        ]
    )


def decode_envelope(body: bytes, meta: bytes) -> Envelope:
    """The envelope :func:`encode_meta` and its body were made from."""
    headers, properties, content_type, content_encoding, exchange, routing_key = orjson.loads(meta)
    return Envelope(
        body, headers, properties, content_type, content_encoding, exchange, routing_key
    )
