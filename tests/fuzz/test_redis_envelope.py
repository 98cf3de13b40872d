"""The Redis envelope decoder reads any entry without raising; mark_redelivered too."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from celeriac.protocol.message import Envelope, build_task_envelope
from celeriac.transports.redis import envelope as codec
from tests.fuzz.support import depths, json_values, nested_json, settle, spoiled

_ENCODE = codec.Encoder()


def check_decode(raw: bytes) -> tuple[Envelope, bool]:
    """The property: ``decode`` returns a well-typed envelope and raises nothing."""
    outcome = settle(lambda: codec.decode(raw), allowed=())
    assert not isinstance(outcome, BaseException)
    envelope, redelivered = outcome
    assert isinstance(envelope.body, bytes)
    assert isinstance(envelope.headers, dict) and isinstance(envelope.properties, dict)
    for text in (envelope.content_type, envelope.content_encoding):
        assert isinstance(text, str)
    assert isinstance(envelope.exchange, str) and isinstance(envelope.routing_key, str)
    assert isinstance(redelivered, bool)
    return envelope, redelivered


def check_mark(raw: bytes) -> bytes:
    marked = settle(lambda: codec.mark_redelivered(raw), allowed=())
    assert isinstance(marked, bytes)
    return marked


@st.composite
def valid_entries(draw: st.DrawFn) -> bytes:
    args = draw(st.lists(json_values, max_size=3))
    kwargs = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
    envelope = build_task_envelope(
        draw(st.text(min_size=1, max_size=20)),
        draw(st.uuids()).hex,
        args,
        kwargs,
        extra_headers=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    )
    envelope.routing_key = draw(st.text(max_size=10))
    return _ENCODE(envelope)


#: Where a structured mutation puts a value of another type.
_PLACES = (
    ("properties",),
    ("headers",),
    ("body",),
    ("content-type",),
    ("content-encoding",),
    ("properties", "delivery_info"),
    ("properties", "body_encoding"),
    ("properties", "delivery_info", "exchange"),
    ("properties", "delivery_info", "routing_key"),
    ("headers", "redelivered"),
    ("headers", "task"),
)


@st.composite
def mutated_entries(draw: st.DrawFn) -> bytes:
    """A valid entry with a field removed, or replaced by a value of another type, or by
    deeply nested JSON; written back as JSON and maybe spoiled at the byte level."""
    document: Any = json.loads(draw(valid_entries()))
    place = draw(st.sampled_from(_PLACES))
    parent = document
    for key in place[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    deep = None
    if isinstance(parent, dict):
        change = draw(st.sampled_from(["remove", "replace", "nest"]))
        if change == "remove":
            parent.pop(place[-1], None)
        elif change == "replace":
            parent[place[-1]] = draw(json_values)
        else:
            parent[place[-1]] = "__deep__"
            deep = nested_json(draw(depths), draw(st.sampled_from(["[", "{"])))
    text = json.dumps(document)
    if deep is not None:
        text = text.replace('"__deep__"', deep)
    raw = text.encode("utf-8", "surrogatepass")
    return draw(spoiled(raw)) if draw(st.booleans()) else raw


@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    check_decode(raw)
    check_mark(raw)


@given(st.builds(json.dumps, json_values).map(str.encode))
def test_any_json_document(raw: bytes) -> None:
    check_decode(raw)
    check_mark(raw)


@given(valid_entries())
def test_valid_entries_decode_and_mark(raw: bytes) -> None:
    envelope, redelivered = check_decode(raw)
    assert envelope.headers.get("task") and not redelivered
    marked = check_mark(raw)
    again, redelivered = check_decode(marked)
    assert redelivered and again.headers == envelope.headers and again.body == envelope.body


@given(valid_entries().flatmap(spoiled))
def test_spoiled_entries(raw: bytes) -> None:
    check_decode(raw)
    check_mark(raw)


@given(mutated_entries())
def test_mutated_entries(raw: bytes) -> None:
    check_decode(raw)
    check_mark(raw)
