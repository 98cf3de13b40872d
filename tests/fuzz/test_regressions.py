"""The malformed inputs reported against the wire decoders, one test each, and the limits."""

from __future__ import annotations

import bz2
import json
import lzma
import struct
import time
import zlib
from typing import Any

import pytest

from celeriac.exceptions import DecodeError, InvalidMessageError
from celeriac.protocol import compression, serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.message import Envelope, decode_task_body, parse_datetime, upgrade_v1
from celeriac.protocol.results import loads_result
from celeriac.transports.amqp import codec
from celeriac.transports.amqp.connection import AMQPConnection, ConnectionParams
from celeriac.transports.redis import envelope as redis_envelope
from tests.fuzz.test_amqp_codec import Listener, deliver_payload, nested_table

DEEP = b"[" * 100_000 + b"]" * 100_000

# -- Redis envelope -------------------------------------------------------------------------


def entry(**fields: Any) -> bytes:
    document = {"body": "", "headers": {}, "properties": {}, **fields}
    return json.dumps(document).encode()


def is_placeholder(raw: bytes) -> bool:
    """Whether ``decode`` hands ``raw`` on as a bare body, for the worker to reject."""
    envelope, redelivered = redis_envelope.decode(raw)
    bare = (envelope.body, envelope.headers, envelope.content_type)
    return bare == (raw, {}, "application/data") and not redelivered


@pytest.mark.parametrize(
    "raw",
    [
        DEEP,
        entry(headers={"x": "DEEP"}).replace(b'"DEEP"', DEEP),
        entry(headers={"x": "DEEP", "nan": "NAN"})
        .replace(b'"DEEP"', DEEP)
        .replace(b'"NAN"', b"NaN"),
        b"{}",
        b'{"hello":"world"}',
        b"[1, 2]",
        entry(properties=[]),
        entry(headers=[1]),
        entry(properties={"delivery_info": [1]}),
        entry(body=5),
        entry(body="\udc80"),
        entry(**{"content-type": 5}),
    ],
)
def test_redis_entries_that_are_not_envelopes(raw: bytes) -> None:
    assert is_placeholder(raw)


@pytest.mark.parametrize("raw", [DEEP, b"{}", b'{"hello":"world"}', b"[1]", entry(headers=[1])])
def test_mark_redelivered_leaves_non_envelopes_alone(raw: bytes) -> None:
    assert redis_envelope.mark_redelivered(raw) == raw


def test_mark_redelivered_keeps_what_only_pythons_json_reads() -> None:
    raw = b'{"body":"","headers":{"big":123456789012345678901234567890,"n":NaN},"properties":{}}'
    envelope, redelivered = redis_envelope.decode(redis_envelope.mark_redelivered(raw))
    assert redelivered
    assert envelope.headers["big"] == 123456789012345678901234567890
    assert envelope.headers["n"] != envelope.headers["n"]  # still NaN


def test_redis_entry_over_max_message_bytes() -> None:
    raw = entry(headers={"task": "t", "id": "i"})
    assert redis_envelope.decode(raw)[0].headers
    small = Limits(max_message_bytes=len(raw) - 1)
    assert redis_envelope.decode(raw, limits=small)[0].headers == {}
    assert redis_envelope.mark_redelivered(raw, limits=small) == raw


# -- AMQP codec -----------------------------------------------------------------------------


def table_with(field: bytes) -> bytes:
    return struct.pack(">I", len(field)) + field


def test_amqp_table_nested_5000_deep() -> None:
    with pytest.raises(codec.FrameError, match="max_depth"):
        codec.decode_table(nested_table(5000), 0)
    with pytest.raises(codec.FrameError, match="max_depth"):
        codec.decode_table(nested_table(5000, b"A"), 0)


def test_amqp_table_depth_follows_limits() -> None:
    assert codec.decode_table(nested_table(3), 0, limits=Limits(max_depth=5))[0]
    with pytest.raises(codec.FrameError):
        codec.decode_table(nested_table(4), 0, limits=Limits(max_depth=5))


def test_amqp_header_key_not_utf8() -> None:
    with pytest.raises(codec.FrameError, match="utf-8"):
        codec.decode_table(table_with(b"\x02\xff\xfeV"), 0)


@pytest.mark.parametrize("seconds", [2**64 - 1, 2**63, 10**12, 253402300800])
def test_amqp_timestamp_out_of_range(seconds: int) -> None:
    with pytest.raises(codec.FrameError, match="out of range"):
        codec.decode_table(table_with(b"\x01tT" + struct.pack(">Q", seconds)), 0)


@pytest.mark.parametrize("flag", [1 << 15, 1 << 10])  # content_type, correlation_id
def test_amqp_short_strings_not_utf8(flag: int) -> None:
    with pytest.raises(codec.FrameError):
        codec.decode_properties(b"\x02\xff\xfe", 0, flag)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\x00\x10\x01kS\x00\x00\x00\x01x",  # size beyond the data
        b"\x00\x00\x00\x05\x01kS\x00\x00\x00\x09x",  # a string beyond the table
        b"\x00\x00\x00\x03\x01kl",  # an int64 cut short
        b"\x00\x00\x00\x03\x01kZ",  # an unknown field type
    ],
)
def test_amqp_inconsistent_tables(data: bytes) -> None:
    with pytest.raises(codec.FrameError):
        codec.decode_table(data, 0)


def test_amqp_properties_cut_short() -> None:
    flags, data = codec.encode_properties("application/json", "utf-8", {"a": "b"}, {})
    with pytest.raises(codec.FrameError):
        codec.decode_properties(data[:-3], 0, flags)


def test_delivery_with_unreadable_properties_is_handed_on_bare() -> None:
    listener = Listener()
    connection = AMQPConnection(ConnectionParams("localhost", 5672, "g", "g", "/"), listener)
    header = codec._content_head.pack(codec.BASIC_CLASS, 0, 2, 1 << 13) + nested_table(5000)
    connection._dispatch(
        codec.frame(codec.FRAME_METHOD, 1, deliver_payload("ctag", 7, "", "q"))
        + codec.frame(codec.FRAME_HEADER, 1, header)
        + codec.frame(codec.FRAME_BODY, 1, b"{}")
    )
    [(_channel, deliver, content, body, unreadable)] = listener.deliveries
    assert deliver[1] == 7 and body == b"{}"
    assert content == ("application/data", "binary", {}, {})
    assert "max_depth" in unreadable


# -- task bodies, embeds, v1, header times ----------------------------------------------------


def json_envelope(body: bytes, headers: dict[str, Any] | None = None) -> Envelope:
    return Envelope(body, {"task": "t", "id": "i"} if headers is None else headers, {})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'[["x"], {}, {"callbacks": 5}]', "callbacks"),
        (b'[["x"], {}, {"callbacks": ["x"]}]', "callbacks"),
        (b'[["x"], {}, {"errbacks": [{"task": 1}]}]', "errbacks"),
        (b'[["x"], {}, {"chain": "x"}]', "chain"),
        (b'[["x"], {}, {"chain": [{"task": "a", "kwargs": []}]}]', "kwargs"),
        (b'[["x"], {}, {"chord": []}]', "chord"),
        (b'{"task": "t", "id": "i", "args": "abc"}', "args"),
        (b'{"task": "t", "id": "i", "callbacks": 5}', "callbacks"),
    ],
)
def test_embedded_workflows_of_the_wrong_shape(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidMessageError, match=problem):
        decode_task_body(json_envelope(body), None)


def test_kwargs_with_keys_that_are_not_names() -> None:
    body = serializers.dumps([[], {1: 2}, None], "yaml")
    with pytest.raises(InvalidMessageError, match="kwargs"):
        decode_task_body(Envelope(body[2], {"task": "t", "id": "i"}, {}, body[0]), None)


def test_workflow_signatures_pass() -> None:
    signature = {"task": "add", "args": [1], "kwargs": {}, "options": {}, "immutable": False}
    body = json.dumps([[1], {}, {"callbacks": [signature], "chain": [signature]}]).encode()
    assert decode_task_body(json_envelope(body), None).embed["callbacks"] == [signature]


@pytest.mark.parametrize("timelimit", [5, "ab", [1, 2, 3]])
def test_v1_timelimit_of_the_wrong_shape(timelimit: Any) -> None:
    body = json.dumps({"task": "t", "id": "i", "timelimit": timelimit}).encode()
    with pytest.raises(InvalidMessageError, match="timelimit"):
        upgrade_v1(json_envelope(body, {}), None)


def test_v1_local_time_out_of_range_is_kept() -> None:
    body = json.dumps({"task": "t", "id": "i", "eta": "0001-01-01T00:00:00", "utc": False})
    envelope = upgrade_v1(json_envelope(body.encode(), {}), None)
    assert envelope.headers["eta"] == "0001-01-01T00:00:00"


@pytest.mark.parametrize("value", [2**64, -(2**64), float("nan"), float("inf"), 1e20, [1]])
def test_header_times_out_of_range(value: Any) -> None:
    with pytest.raises(InvalidMessageError):
        parse_datetime(value)


# -- serializers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        DEEP,
        b"[" * 300 + b"NaN" + b"]" * 300,  # Python's json reads it: the depth check does
        b"[" * 1000 + b"12345678901234567890" + b"]" * 1000,
        b'{"__type__": "decimal", "__value__": "x"}',
        b'{"__type__": "uuid", "__value__": {}}',
        b'{"__type__": ["list"], "__value__": 1}',
        b'{"__type__": "bytes", "__value__": 5}',
        b'"\\ud800" x',
    ],
)
def test_json_that_cannot_be_read(data: bytes) -> None:
    with pytest.raises(DecodeError):
        serializers.json_loads(data)
    with pytest.raises(DecodeError):
        serializers.loads(data, "application/json")


def test_json_depth_follows_limits() -> None:
    shallow = Limits(max_depth=5)
    assert serializers.json_loads(b"[[[[[NaN]]]]]", shallow)
    with pytest.raises(DecodeError, match="max_depth=5"):
        serializers.json_loads(b"[[[[[[NaN]]]]]]", shallow)
    tagged = b'[[[[[{"__type__": "decimal", "__value__": "1"}]]]]]'
    with pytest.raises(DecodeError, match="max_depth=5"):
        serializers.json_loads(tagged, shallow)


def test_msgpack_nested_deeper_than_the_limit() -> None:
    with pytest.raises(DecodeError, match="max_depth"):
        serializers.loads(b"\x91" * 201 + b"\xc0", "application/x-msgpack")
    with pytest.raises(DecodeError):
        serializers.loads(b"\x91" * 100_000 + b"\xc0", "application/x-msgpack")


def test_yaml_nested_100000_deep() -> None:
    with pytest.raises(DecodeError, match="max_depth"):
        serializers.loads(DEEP, "application/x-yaml")


def test_result_over_max_result_bytes() -> None:
    data = serializers.json_dumps({"status": "SUCCESS", "result": "x" * 100})
    assert loads_result(data, "application/json")["status"] == "SUCCESS"
    with pytest.raises(DecodeError, match="max_result_bytes"):
        loads_result(data, "application/json", limits=Limits(max_result_bytes=50))


def test_body_over_max_message_bytes() -> None:
    with pytest.raises(DecodeError, match="max_message_bytes"):
        decode_task_body(json_envelope(b"[[], {}, null]"), None, limits=Limits(max_message_bytes=5))


# -- compression bombs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "compress"),
    [
        ("application/x-gzip", zlib.compress),
        ("application/x-bz2", bz2.compress),
        ("application/x-lzma", lzma.compress),
    ],
)
def test_bomb_stops_at_a_lower_limit(header: str, compress: Any) -> None:
    bomb = compress(b"\0" * 2_000_000)
    with pytest.raises(DecodeError, match="max_decompressed_bytes=65536"):
        compression.decompress(bomb, header, limits=Limits(max_decompressed_bytes=65536))
    envelope = Envelope(bomb, {"task": "t", "id": "i", "compression": header}, {})
    with pytest.raises(DecodeError, match="max_decompressed_bytes"):
        decode_task_body(envelope, None, limits=Limits(max_decompressed_bytes=65536))


def zlib_bomb(size: int) -> bytes:
    """``size`` zero bytes, zlib-compressed a megabyte at a time (little memory)."""
    compressor = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(size >> 20)]
    return b"".join(
        [*parts, compressor.compress(bytes(size & ((1 << 20) - 1))), compressor.flush()]
    )


def test_bomb_stops_at_the_default_limit_quickly() -> None:
    bomb = zlib_bomb(200_000_000)  # 200 MB of zeros, about 200 KB compressed
    start = time.perf_counter()
    with pytest.raises(DecodeError, match=f"max_decompressed_bytes={64 * 1024 * 1024}"):
        compression.decompress(bomb, "application/x-gzip")
    assert time.perf_counter() - start < 5  # inflates 64 MiB, not 200 MB
    assert DEFAULT_LIMITS.max_decompressed_bytes == 64 * 1024 * 1024
