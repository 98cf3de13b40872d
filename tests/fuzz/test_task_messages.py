"""Protocol v2 task messages (and v1 ones upgraded): the body, its embedded workflow and
the headers decode to typed values or raise DecodeError (or ContentDisallowed)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given, reject
from hypothesis import strategies as st

from celeriac.exceptions import ContentDisallowed, DecodeError, InvalidMessageError
from celeriac.protocol import headers as header_questions
from celeriac.protocol import serializers
from celeriac.protocol.message import (
    Envelope,
    TaskBody,
    build_task_envelope,
    check_embed,
    check_task_headers,
    decode_task_body,
    parse_datetime,
    upgrade_v1,
)
from tests.fuzz.support import json_values, scalars, settle, spoiled

ERRORS = (DecodeError, ContentDisallowed)
SERIALIZERS = ("json", "msgpack", "yaml")

# -- strategies -----------------------------------------------------------------------------

signatures = st.fixed_dictionaries(
    {"task": st.text(min_size=1, max_size=10)},
    optional={
        "args": st.lists(scalars, max_size=3),
        "kwargs": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
        "options": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
        "subtask_type": st.none() | st.sampled_from(["chain", "group", "chord"]),
        "immutable": st.booleans(),
    },
)
#: A signature, or something of another type where one belongs.
maybe_signatures = signatures | json_values
valid_embeds = st.fixed_dictionaries(
    {
        "callbacks": st.none() | st.lists(signatures, max_size=2),
        "errbacks": st.none() | st.lists(signatures, max_size=2),
        "chain": st.none() | st.lists(signatures, max_size=3),
        "chord": st.none() | signatures,
    }
)
#: Embeds with any value in any place, signatures of the wrong shape among them.
any_embeds = (
    st.none()
    | json_values
    | st.fixed_dictionaries(
        {},
        optional={
            name: st.none() | maybe_signatures | st.lists(maybe_signatures, max_size=3)
            for name in ("callbacks", "errbacks", "chain", "chord")
        },
    )
)
arguments = st.lists(json_values, max_size=3)
keyword_arguments = st.dictionaries(st.text(max_size=8), json_values, max_size=3)


def body_envelope(payload: Any, serializer: str, headers: dict[str, Any] | None = None) -> Envelope:
    try:
        content_type, encoding, data = serializers.dumps(payload, serializer)
    except (OverflowError, ValueError, TypeError):  # msgpack: integers beyond 64 bits
        content_type, encoding, data = serializers.dumps(payload, "json")
    return Envelope(data, {"task": "t", "id": "i", **(headers or {})}, {}, content_type, encoding)


# -- the property ---------------------------------------------------------------------------


def check_body(envelope: Envelope) -> TaskBody | BaseException:
    outcome = settle(lambda: decode_task_body(envelope, None), ERRORS)
    if isinstance(outcome, TaskBody):
        assert isinstance(outcome.args, list)
        assert isinstance(outcome.kwargs, dict) and all(isinstance(k, str) for k in outcome.kwargs)
        assert isinstance(outcome.embed, dict)
        check_embed(outcome.embed)  # the shape the worker relies on
    return outcome


@given(st.binary(max_size=1000), st.sampled_from(sorted(serializers._BY_CONTENT_TYPE)))
def test_random_bodies(data: bytes, content_type: str) -> None:
    if content_type == "application/x-python-serialize":
        content_type = "application/json"  # pickle is fuzzed apart, without code in it
    check_body(Envelope(data, {"task": "t", "id": "i"}, {}, content_type, "utf-8"))


@given(arguments, keyword_arguments, valid_embeds, st.sampled_from(SERIALIZERS))
def test_valid_bodies(args: list[Any], kwargs: dict[str, Any], embed: Any, name: str) -> None:
    outcome = check_body(body_envelope([args, kwargs, embed], name))
    assert isinstance(outcome, TaskBody)


@given(json_values | st.lists(json_values, min_size=3, max_size=3), st.sampled_from(SERIALIZERS))
def test_any_payload(payload: Any, name: str) -> None:
    check_body(body_envelope(payload, name))


@given(
    st.one_of(arguments, json_values),
    st.one_of(keyword_arguments, json_values),
    any_embeds,
    st.sampled_from(SERIALIZERS),
)
def test_bodies_with_any_embed(args: Any, kwargs: Any, embed: Any, name: str) -> None:
    outcome = check_body(body_envelope([args, kwargs, embed], name))
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, DecodeError)


@given(st.data(), st.sampled_from(["zlib", "bzip2", "lzma", None]))
def test_spoiled_task_messages(data: st.DataObject, compressed: str | None) -> None:
    try:
        envelope = build_task_envelope(
            "t",
            "i",
            data.draw(arguments),
            data.draw(keyword_arguments),
            serializer=data.draw(st.sampled_from(SERIALIZERS)),
            compression_name=compressed,
            callbacks=data.draw(st.none() | st.lists(signatures, max_size=2)),
        )
    except OverflowError:  # msgpack writes no integer beyond 64 bits: no message to spoil
        reject()
    envelope.body = data.draw(spoiled(envelope.body))
    if data.draw(st.booleans()):
        envelope.headers["compression"] = data.draw(json_values)
    check_body(envelope)


# -- protocol v1 ----------------------------------------------------------------------------

v1_payloads = st.fixed_dictionaries(
    {"task": json_values, "id": json_values},
    optional={
        name: json_values
        for name in (
            "args",
            "kwargs",
            "eta",
            "expires",
            "utc",
            "timelimit",
            "retries",
            "callbacks",
            "errbacks",
            "chord",
            "group",
            "taskset",
            "root_id",
            "parent_id",
            "lang",
        )
    },
)


@given(v1_payloads | json_values, st.sampled_from(SERIALIZERS))
def test_v1_upgrade(payload: Any, name: str) -> None:
    envelope = body_envelope(payload, name)
    envelope.headers = {}
    outcome = settle(lambda: upgrade_v1(envelope, None), ERRORS)
    if outcome is envelope:
        check_task_headers_settles(envelope.headers)
        assert isinstance(envelope.headers["timelimit"], list)
        check_body(envelope)


@given(
    st.fixed_dictionaries(
        {"task": st.text(min_size=1), "id": st.text(min_size=1)},
        optional={"eta": st.datetimes().map(dt.datetime.isoformat), "utc": st.booleans()},
    )
)
def test_v1_upgrade_of_valid_messages(payload: dict[str, Any]) -> None:
    envelope = body_envelope(payload, "json")
    envelope.headers = {}
    assert upgrade_v1(envelope, None) is envelope
    check_task_headers(envelope.headers)


# -- headers --------------------------------------------------------------------------------


def check_task_headers_settles(headers: dict[str, Any]) -> None:
    settle(lambda: check_task_headers(headers), (InvalidMessageError,))


@given(st.dictionaries(st.sampled_from(["task", "id", "eta", "x"]) | st.text(), json_values))
def test_any_headers(headers: dict[str, Any]) -> None:
    check_task_headers_settles(headers)


@given(
    json_values
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.datetimes().map(dt.datetime.isoformat)
    | st.text(alphabet="0123456789-:T.+Z ", max_size=40)
)
def test_header_times(value: Any) -> None:
    outcome = settle(lambda: parse_datetime(value), (InvalidMessageError,))
    assert outcome is None or isinstance(outcome, dt.datetime | InvalidMessageError)
    if isinstance(outcome, dt.datetime):
        assert outcome.tzinfo is not None


#: Header values of every type a serializer gives: JSON's, msgpack's bytes, YAML's times.
header_values = (
    json_values
    | st.binary(max_size=10)
    | st.datetimes()
    | st.dates()
    | st.tuples(json_values, json_values)
    | st.integers(-(2**70), 2**70)
)


@given(
    st.dictionaries(
        st.sampled_from(["timelimit", "expires", "eta", "x-celeriac-lost", "reply_to"]),
        header_values,
    )
)
def test_header_questions(headers: dict[str, Any]) -> None:
    """What the consumer and the executor ask of every message answers or raises
    InvalidMessageError, whatever the types of the values (another producer sent them)."""
    invalid = (InvalidMessageError,)
    settle(lambda: header_questions.time_limits(headers), invalid)
    settle(lambda: header_questions.is_expired(headers, 1e9), invalid)
    settle(lambda: header_questions.eta_timestamp(headers), invalid)
    assert header_questions.times_lost(headers) >= 0
    header_questions.reply_extra(headers, needs_reply_to=True)
    header_questions.request_from_headers(headers, headers, {}, {})


@given(st.binary(max_size=300))
def test_compressed_bodies(data: bytes) -> None:
    for header in ("application/x-gzip", "application/x-bz2", "application/x-lzma"):
        check_body(Envelope(data, {"task": "t", "id": "i", "compression": header}, {}))
