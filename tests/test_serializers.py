"""Serializers and compression: round trips, ``accept_content``, kombu's JSON dialect.

The kombu tests read and write with the real kombu, the library Celery peers use, to prove
the bytes are the same dialect both ways.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

import pytest

from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol import compression, serializers

SAMPLE: dict[str, Any] = {
    "text": "héllo",
    "number": 12,
    "float": 1.5,
    "flag": True,
    "nothing": None,
    "list": [1, "two", [3]],
    "nested": {"a": {"b": [None, False]}},
}

MIME = {
    "json": ("application/json", "utf-8"),
    "msgpack": ("application/x-msgpack", "binary"),
    "yaml": ("application/x-yaml", "utf-8"),
    "pickle": ("application/x-python-serialize", "binary"),
}


@pytest.mark.parametrize("name", sorted(MIME))
def test_round_trip_by_name_and_content_type(name: str) -> None:
    content_type, content_encoding, data = serializers.dumps(SAMPLE, name)
    assert (content_type, content_encoding) == MIME[name]
    assert isinstance(data, bytes)
    assert serializers.loads(data, content_type) == SAMPLE
    # The serializer is also found by its MIME type.
    assert serializers.get(content_type).name == name
    assert serializers.dumps(SAMPLE, content_type)[2] == data


def test_pickle_keeps_python_types() -> None:
    value = {"set": {1, 2}, "tuple": (1, 2), "complex": 1 + 2j}
    content_type, _, data = serializers.dumps(value, "pickle")
    assert serializers.loads(data, content_type) == value


def test_accept_content_is_a_set_of_mime_types() -> None:
    accept = serializers.content_types(["json", "application/x-msgpack"])
    assert accept == frozenset({"application/json", "application/x-msgpack"})
    with pytest.raises(ContentDisallowed, match="nosuch"):
        serializers.content_types(["nosuch"])


def test_content_not_accepted_is_refused_naming_the_type() -> None:
    content_type, _, data = serializers.dumps(SAMPLE, "pickle")
    accept = serializers.content_types(["json"])
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize") as raised:
        serializers.loads(data, content_type, accept)
    assert "application/json" in str(raised.value)  # says what is accepted
    assert serializers.loads(data, content_type, None) == SAMPLE  # None accepts all


def test_unknown_content_type_is_refused() -> None:
    with pytest.raises(ContentDisallowed, match="application/x-nothing"):
        serializers.loads(b"{}", "application/x-nothing")
    with pytest.raises(ContentDisallowed, match="nothing"):
        serializers.dumps({}, "nothing")


@pytest.mark.parametrize(
    ("name", "data"),
    [("json", b"{not json"), ("msgpack", b"\xc1"), ("yaml", b"a: [b"), ("pickle", b"garbage")],
)
def test_undecodable_bodies_raise_decode_error_naming_the_type(name: str, data: bytes) -> None:
    content_type = MIME[name][0]
    with pytest.raises(DecodeError, match=content_type):
        serializers.loads(data, content_type)


def test_yaml_safe_loader_refuses_python_objects() -> None:
    with pytest.raises(DecodeError):
        serializers.loads(b"!!python/object/apply:os.system ['true']", "application/x-yaml")


def test_a_custom_serializer_can_be_registered() -> None:
    serializers.register(
        serializers.Serializer(
            "upper", "application/x-upper", "utf-8", lambda v: str(v).upper().encode(), bytes.decode
        )
    )
    assert serializers.dumps("abc", "upper") == ("application/x-upper", "utf-8", b"ABC")
    assert serializers.loads(b"ABC", "application/x-upper") == "ABC"


# -- compression


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("zlib", "application/x-gzip"),
        ("gzip", "application/x-gzip"),
        ("bzip2", "application/x-bz2"),
        ("lzma", "application/x-lzma"),
        ("application/x-bz2", "application/x-bz2"),
    ],
)
def test_compression_round_trip_and_header_value(name: str, header: str) -> None:
    data = b"celeriac " * 200
    header_value, compressed = compression.compress(data, name)
    assert header_value == header
    assert len(compressed) < len(data)
    assert compression.decompress(compressed, header_value) == data


def test_unknown_compression() -> None:
    with pytest.raises(ImproperlyConfigured, match="snappy"):
        compression.compress(b"x", "snappy")
    with pytest.raises(DecodeError, match="application/x-snappy"):
        compression.decompress(b"x", "application/x-snappy")
    with pytest.raises(DecodeError, match="application/x-gzip"):
        compression.decompress(b"not compressed", "application/x-gzip")


# -- kombu's JSON dialect

TAGGED_VALUES: list[tuple[Any, dict[str, Any]]] = [
    (
        dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC),
        {"__type__": "datetime", "__value__": "2024-01-02T03:04:05.000006+00:00"},
    ),
    (
        dt.datetime(2024, 1, 2, 3, 4, 5),
        {"__type__": "datetime", "__value__": "2024-01-02T03:04:05"},
    ),
    (dt.date(2024, 1, 2), {"__type__": "date", "__value__": "2024-01-02"}),
    (dt.time(1, 2, 3), {"__type__": "time", "__value__": "01:02:03"}),
    (decimal.Decimal("3.14"), {"__type__": "decimal", "__value__": "3.14"}),
    (uuid.UUID(int=255), {"__type__": "uuid", "__value__": {"hex": f"{255:032x}"}}),
    (b"plain", {"__type__": "bytes", "__value__": "plain"}),
    (b"\xff\x00", {"__type__": "base64", "__value__": "/wA="}),
]


@pytest.mark.parametrize(("value", "tag"), TAGGED_VALUES, ids=lambda v: type(v).__name__)
def test_json_tags_both_ways(value: Any, tag: dict[str, Any]) -> None:
    import orjson

    encoded = serializers.json_dumps({"v": value, "in_list": [value]})
    assert orjson.loads(encoded) == {"v": tag, "in_list": [tag]}
    assert serializers.json_loads(encoded) == {"v": value, "in_list": [value]}
    assert serializers.json_loads(encoded.decode()) == {"v": value, "in_list": [value]}


def test_json_tags_inside_tuples_sets_and_dict_values() -> None:
    ident = uuid.UUID(int=7)
    encoded = serializers.json_dumps(((ident,), {"k": {ident}}, [{"deep": [ident]}]))
    assert serializers.json_loads(encoded) == [[ident], {"k": [ident]}, [{"deep": [ident]}]]


def test_json_untagged_objects_are_left_alone() -> None:
    three_keys = {"__type__": "datetime", "__value__": "x", "other": 1}
    assert serializers.json_loads(serializers.json_dumps(three_keys)) == three_keys
    assert serializers.json_loads(b'{"__type__": "just a key"}') == {"__type__": "just a key"}


def test_json_unknown_tag_raises() -> None:
    with pytest.raises(DecodeError, match="frobnicator"):
        serializers.json_loads(b'{"__type__": "frobnicator", "__value__": 1}')
    with pytest.raises(DecodeError, match="frobnicator"):
        serializers.loads(b'[{"__type__": "frobnicator", "__value__": 1}]', "application/json")


def test_json_objects_with_dunder_json_and_unserializable_values() -> None:
    class Money:
        def __json__(self) -> dict[str, Any]:
            return {"amount": "1.00", "currency": "EUR"}

    assert serializers.json_loads(serializers.json_dumps([Money()])) == [
        {"amount": "1.00", "currency": "EUR"}
    ]
    with pytest.raises(TypeError, match="object"):
        serializers.json_dumps(object())


def test_json_non_string_keys_become_strings() -> None:
    assert serializers.json_loads(serializers.json_dumps({1: "a"})) == {"1": "a"}


@pytest.mark.celery
def test_kombu_reads_our_json_and_we_read_kombus() -> None:
    kombu_json = pytest.importorskip("kombu.utils.json")
    values = [value for value, _ in TAGGED_VALUES]
    document = {"values": values, "args": (1, "x"), "none": None}
    ours = serializers.json_dumps(document)
    assert kombu_json.loads(ours) == {**document, "args": [1, "x"]}
    theirs = kombu_json.dumps(document)
    assert serializers.json_loads(theirs) == {**document, "args": [1, "x"]}


@pytest.mark.celery
def test_kombu_decompresses_ours_and_we_decompress_kombus() -> None:
    kombu_compression = pytest.importorskip("kombu.compression")
    data = b"payload " * 64
    for name in ("zlib", "bzip2", "lzma"):
        header, compressed = compression.compress(data, name)
        assert kombu_compression.decompress(compressed, header) == data
        theirs, their_header = kombu_compression.compress(data, name)
        assert their_header == header
        assert compression.decompress(theirs, their_header) == data
