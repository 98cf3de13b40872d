"""The AMQP codec's decoders raise nothing but FrameError, and the connection's frame
dispatch nothing but ConnectionLost, whatever the bytes."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from celeriac.transports.amqp import codec
from celeriac.transports.amqp.connection import AMQPConnection, ConnectionLost, ConnectionParams
from tests.fuzz.support import depths, settle, spoiled

ONLY_FRAME_ERROR = (codec.FrameError,)

field_scalars = (
    st.none()
    | st.booleans()
    | st.integers(codec.INT64_MIN, codec.INT64_MAX)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.datetimes(min_value=dt.datetime(1970, 1, 2), timezones=st.just(dt.UTC))
    | st.decimals(min_value=-21_474_836, max_value=21_474_836, places=2)  # int32 unscaled
)
field_values: st.SearchStrategy[Any] = st.recursive(
    field_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
headers_tables = st.dictionaries(st.text(max_size=12), field_values, max_size=6)
shortstrs = st.text(max_size=30)
property_values = st.fixed_dictionaries(
    {},
    optional={
        "delivery_mode": st.integers(0, 255),
        "priority": st.integers(0, 255),
        "correlation_id": shortstrs,
        "reply_to": shortstrs,
        "expiration": st.integers(0, 10**9).map(str),
        "message_id": shortstrs,
        "timestamp": st.integers(0, 2**64 - 1),
        "type": shortstrs,
        "app_id": shortstrs,
    },
)


def check_table(data: bytes, offset: int = 0) -> None:
    outcome = settle(lambda: codec.decode_table(data, offset), ONLY_FRAME_ERROR)
    if not isinstance(outcome, BaseException):
        table, end = outcome
        assert isinstance(table, dict) and all(isinstance(key, str) for key in table)
        assert offset < end <= len(data)


def check_properties(data: bytes, flags: int) -> None:
    outcome = settle(lambda: codec.decode_properties(data, 0, flags), ONLY_FRAME_ERROR)
    if not isinstance(outcome, BaseException):
        content_type, content_encoding, headers, properties = outcome
        assert isinstance(content_type, str) and isinstance(content_encoding, str)
        assert isinstance(headers, dict) and isinstance(properties, dict)


def nested_table(depth: int, kind: bytes = b"F") -> bytes:
    """A field table holding tables (``F``) or arrays (``A``) nested ``depth`` levels, the
    innermost empty. Built inside out from the sizes alone, so a deep one is quick."""
    field = b"\x01k" + kind if kind == b"F" else kind  # a table names its fields
    prefixes = []
    size = 4  # the innermost container: an empty size prefix
    for _ in range(depth):
        prefixes.append(struct.pack(">I", len(field) + size) + field)
        size += 4 + len(field)
    outer = b"\x01k" + kind
    return struct.pack(">I", len(outer) + size) + outer + b"".join(reversed(prefixes)) + bytes(4)


@given(st.binary(max_size=600))
def test_random_tables(data: bytes) -> None:
    check_table(data)
    settle(lambda: codec.decode_value(data, 0), ONLY_FRAME_ERROR)


@given(headers_tables.map(codec.encode_table).flatmap(spoiled))
def test_spoiled_tables(data: bytes) -> None:
    check_table(data)


@given(headers_tables)
def test_tables_round_trip(table: dict[str, Any]) -> None:
    data = codec.encode_table(table)
    decoded, end = codec.decode_table(data, 0)
    assert end == len(data) and decoded.keys() == table.keys()


@given(depths, st.sampled_from([b"F", b"A"]))
def test_deep_tables(depth: int, kind: bytes) -> None:
    check_table(nested_table(depth, kind))


@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
def test_random_properties(data: bytes, flags: int) -> None:
    check_properties(data, flags)


@st.composite
def property_lists(draw: st.DrawFn) -> tuple[int, bytes]:
    return codec.encode_properties(
        draw(shortstrs), draw(shortstrs), draw(headers_tables), draw(property_values)
    )


@given(property_lists(), st.data())
def test_spoiled_properties(encoded: tuple[int, bytes], data: st.DataObject) -> None:
    flags, property_list = encoded
    if data.draw(st.booleans()):
        flags ^= 1 << data.draw(st.integers(0, 15))
    check_properties(data.draw(spoiled(property_list)), flags)


@given(st.binary(max_size=100))
def test_random_method_and_header_payloads(payload: bytes) -> None:
    settle(lambda: codec.parse_deliver(payload), ONLY_FRAME_ERROR)
    settle(lambda: codec.parse_ack(payload), ONLY_FRAME_ERROR)
    settle(lambda: codec.parse_content_header(payload), ONLY_FRAME_ERROR)


# -- frames through the connection's dispatch -------------------------------------------


class Listener:
    def __init__(self) -> None:
        self.deliveries: list[tuple[Any, ...]] = []

    def on_delivery(self, *delivery: Any) -> None:
        self.deliveries.append(delivery)

    def on_confirm(self, *args: Any) -> None:
        pass

    def on_consumer_cancelled(self, *args: Any) -> None:
        pass

    def on_channel_closed(self, *args: Any) -> None:
        pass


def deliver_payload(consumer_tag: str, tag: int, exchange: str, routing_key: str) -> bytes:
    return (
        b"\x00\x3c\x00\x3c"
        + codec._shortstr(consumer_tag)
        + struct.pack(">QB", tag, 0)
        + codec._shortstr(exchange)
        + codec._shortstr(routing_key)
    )


@st.composite
def delivery_frames(draw: st.DrawFn) -> bytes:
    """The three frames of one delivery, each payload maybe spoiled (sizes kept right)."""
    body = draw(st.binary(max_size=50))
    flags, property_list = draw(property_lists())
    method = deliver_payload(draw(shortstrs), draw(st.integers(1, 2**64 - 1)), "", "q")
    header = codec._content_head.pack(codec.BASIC_CLASS, 0, len(body), flags) + property_list
    if draw(st.booleans()):
        header = header[:14] + draw(spoiled(header[14:]))
    if draw(st.integers(0, 9)) == 0:
        method = draw(spoiled(method))
    frames = codec.frame(codec.FRAME_METHOD, 1, method) + codec.frame(codec.FRAME_HEADER, 1, header)
    return frames + (codec.frame(codec.FRAME_BODY, 1, body) if body else b"")


@given(delivery_frames())
def test_dispatch_of_spoiled_deliveries(frames: bytes) -> None:
    listener = Listener()
    params = ConnectionParams("localhost", 5672, "guest", "guest", "/")
    connection = AMQPConnection(params, listener)
    settle(lambda: connection._dispatch(frames), (ConnectionLost,))
    for _channel, _deliver, content, body, *_unreadable in listener.deliveries:
        content_type, content_encoding, headers, properties = content
        assert isinstance(content_type, str) and isinstance(content_encoding, str)
        assert isinstance(headers, dict) and isinstance(properties, dict)
        assert isinstance(body, bytes)


def test_decimal_and_timestamp_fields_decode() -> None:
    table = {"d": decimal.Decimal("1.25"), "t": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    decoded, _ = codec.decode_table(codec.encode_table(table), 0)
    assert decoded == table
