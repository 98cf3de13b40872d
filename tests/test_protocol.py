"""The pure wire format: task envelopes, protocol v1 upgrade, result metadata, states."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from celeriac import exceptions, states
from celeriac.exceptions import ContentDisallowed, DecodeError, InvalidMessageError
from celeriac.protocol import serializers
from celeriac.protocol.headers import (
    LOST_HEADER,
    eta_timestamp,
    is_expired,
    reply_extra,
    request_from_headers,
    time_limits,
    times_lost,
)
from celeriac.protocol.message import (
    Envelope,
    TaskMessageTemplate,
    build_task_envelope,
    check_task_headers,
    decode_task_body,
    isoformat,
    new_task_id,
    new_task_ids,
    parse_datetime,
    safe_repr,
    upgrade_v1,
)
from celeriac.protocol.results import build_meta, exception_from_dict, exception_to_dict

ALL_HEADERS = {
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
}

ARGS = (1, "two", [3.5], {"four": None})
KWARGS = {"when": dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=dt.UTC), "flag": True}


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
def test_build_and_decode_round_trip(serializer: str) -> None:
    kwargs: dict[str, Any] = {"flag": True, "n": 3} if serializer != "pickle" else KWARGS
    envelope = build_task_envelope(
        "proj.add", "id-1", (1, 2), kwargs, serializer=serializer, origin="gen1@host"
    )
    assert set(envelope.headers) == ALL_HEADERS
    assert envelope.headers["task"] == "proj.add"
    assert envelope.headers["id"] == envelope.headers["root_id"] == "id-1"
    assert envelope.properties["correlation_id"] == "id-1"
    assert envelope.content_type == serializers.get(serializer).content_type
    body = decode_task_body(envelope, serializers.content_types([serializer]))
    assert body.args == [1, 2]
    assert body.kwargs == kwargs
    assert body.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_every_header_and_property_from_the_options() -> None:
    envelope = build_task_envelope(
        "proj.add",
        "id-2",
        ARGS,
        KWARGS,
        eta="2030-01-01T00:00:00+00:00",
        expires="2030-01-01T01:00:00+00:00",
        expiration_ms=3_600_000,
        retries=2,
        time_limit=10,
        soft_time_limit=3,
        root_id="root",
        parent_id="parent",
        group_id="group",
        group_index=4,
        shadow="shadowed",
        callbacks=[{"task": "cb"}],
        errbacks=[{"task": "eb"}],
        chain=[{"task": "next"}],
        chord={"task": "body"},
        origin="gen9@host",
        reply_to="reply-queue",
        priority=5,
        delivery_mode=1,
        ignore_result=True,
        replaced_task_nesting=1,
        stamped_headers=["tenant"],
        stamps={"tenant": "acme"},
        extra_headers={"custom": 1},
        extra_properties={"user_property": "x"},
    )
    headers, properties = envelope.headers, envelope.properties
    assert headers["timelimit"] == [10, 3]  # [hard, soft], as on the wire
    assert (headers["root_id"], headers["parent_id"]) == ("root", "parent")
    assert (headers["group"], headers["group_index"]) == ("group", 4)
    assert headers["retries"] == 2 and headers["shadow"] == "shadowed"
    assert headers["eta"] == "2030-01-01T00:00:00+00:00"
    assert headers["origin"] == "gen9@host" and headers["ignore_result"] is True
    assert headers["stamped_headers"] == ["tenant"] and headers["stamps"] == {"tenant": "acme"}
    assert headers["replaced_task_nesting"] == 1 and headers["custom"] == 1
    assert headers["argsrepr"] == repr(ARGS)
    assert properties == {
        "correlation_id": "id-2",
        "reply_to": "reply-queue",
        "delivery_mode": 1,
        "priority": 5,
        "expiration": "3600000",
        "user_property": "x",
    }
    embed = decode_task_body(envelope, None).embed
    assert embed == {
        "callbacks": [{"task": "cb"}],
        "errbacks": [{"task": "eb"}],
        "chain": [{"task": "next"}],
        "chord": {"task": "body"},
    }


def test_template_makes_independent_envelopes() -> None:
    template = TaskMessageTemplate("proj.add", origin="o", reply_to="r")
    first = template.envelope("a", (1,), {})
    second = template.envelope("b", (2,), {}, root_id="root-b", parent_id="parent-b")
    assert (first.headers["id"], second.headers["id"]) == ("a", "b")
    assert first.headers["root_id"] == "a" and first.headers["parent_id"] is None
    assert (second.headers["root_id"], second.headers["parent_id"]) == ("root-b", "parent-b")
    assert (first.headers["argsrepr"], second.headers["argsrepr"]) == ("(1,)", "(2,)")
    assert first.properties["correlation_id"] == "a"
    assert second.properties["correlation_id"] == "b"


def test_argsrepr_is_truncated() -> None:
    envelope = build_task_envelope("t", "i", ("x" * 5000,), {}, argsrepr_maxsize=100)
    assert len(envelope.headers["argsrepr"]) == 100
    assert envelope.headers["argsrepr"].endswith("...")


def test_safe_repr_survives_a_failing_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    text = safe_repr([Broken()])
    assert "Broken" in text


@pytest.mark.parametrize(
    ("name", "header"), [("zlib", "application/x-gzip"), ("bzip2", "application/x-bz2")]
)
def test_compressed_envelope_round_trip(name: str, header: str) -> None:
    envelope = build_task_envelope("t", "i", ("data" * 100,), {}, compression_name=name)
    assert envelope.headers["compression"] == header
    assert envelope.content_type == "application/json"  # still the serializer's type
    assert decode_task_body(envelope, None).args == ["data" * 100]


def test_decode_refuses_content_not_accepted() -> None:
    envelope = build_task_envelope("t", "i", (), {}, serializer="pickle")
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        decode_task_body(envelope, serializers.content_types(["json"]))


def envelope_with_body(body: bytes, content_type: str = "application/json") -> Envelope:
    return Envelope(body, {"task": "t", "id": "i"}, {}, content_type, "utf-8")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[1, 2]", "args, kwargs, embed"),
        (b'"text"', "args, kwargs, embed"),
        (b'[{"a": 1}, {}, null]', "list"),
        (b"[[], [], null]", "object"),
        (b"[[], {}, [1]]", "embed"),
    ],
)
def test_decode_errors_name_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidMessageError, match=problem):
        decode_task_body(envelope_with_body(body), None)


def test_undecodable_body_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="application/json"):
        decode_task_body(envelope_with_body(b"\x00garbage"), None)


def test_null_embed_is_empty() -> None:
    body = decode_task_body(envelope_with_body(b"[[1], {}, null]"), None)
    assert body.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_check_task_headers() -> None:
    check_task_headers({"task": "t", "id": "i"})
    with pytest.raises(InvalidMessageError, match="task, id"):
        check_task_headers({})
    with pytest.raises(InvalidMessageError, match="id"):
        check_task_headers({"task": "t"}, " (body: [])")


# -- protocol v1


def v1_envelope(payload: dict[str, Any], headers: dict[str, Any] | None = None) -> Envelope:
    return Envelope(
        serializers.json_dumps(payload), dict(headers or {}), {}, "application/json", "utf-8"
    )


def test_v1_body_is_upgraded_to_v2_headers() -> None:
    payload = {
        "task": "proj.add",
        "id": "v1-id",
        "args": [1, 2],
        "kwargs": {"z": 3},
        "retries": 1,
        "eta": "2030-01-01T00:00:00+00:00",
        "expires": None,
        "utc": True,
        "callbacks": [{"task": "cb"}],
        "errbacks": None,
        "chord": None,
        "taskset": "group-1",
        "timelimit": [30, 10],
    }
    envelope = upgrade_v1(v1_envelope(payload), None)
    headers = envelope.headers
    assert headers["task"] == "proj.add" and headers["id"] == "v1-id"
    assert headers["root_id"] == "v1-id" and headers["parent_id"] is None
    assert headers["group"] == "group-1"
    assert headers["retries"] == 1
    assert headers["eta"] == "2030-01-01T00:00:00+00:00"
    # Celery 3/4 producers send (time_limit, soft_time_limit): hard first, as in v2.
    assert headers["timelimit"] == [30, 10]
    assert headers["argsrepr"] == "[1, 2]"
    check_task_headers(headers)
    body = decode_task_body(envelope, None)
    assert body.args == [1, 2] and body.kwargs == {"z": 3}
    assert body.embed["callbacks"] == [{"task": "cb"}] and body.embed["chain"] is None


@pytest.mark.celery
def test_v1_matches_what_celery_as_task_v1_sends() -> None:
    pytest.importorskip("celery")
    from celery import Celery as RealCelery

    real = RealCelery("peer", set_as_current=False)
    message = real.amqp.as_task_v1(
        "peer-id", "peer.add", (4, 5), {"k": 1}, time_limit=60, soft_time_limit=50
    )
    import kombu.utils.json

    envelope = upgrade_v1(
        Envelope(kombu.utils.json.dumps(message.body).encode(), dict(message.headers), {}), None
    )
    assert envelope.headers["timelimit"] == [60, 50]
    assert envelope.headers["task"] == "peer.add"
    assert decode_task_body(envelope, None).args == [4, 5]


def test_v1_local_times_become_explicit() -> None:
    payload = {"task": "t", "id": "i", "args": [], "kwargs": {}, "utc": False}
    payload["eta"] = "2030-06-01T12:00:00"
    headers = upgrade_v1(v1_envelope(payload), None).headers
    eta = dt.datetime.fromisoformat(headers["eta"])
    assert eta.tzinfo is not None
    assert eta == dt.datetime(2030, 6, 1, 12).astimezone()


def test_v1_compressed_body() -> None:
    from celeriac.protocol import compression

    payload = {"task": "t", "id": "i", "args": [7], "kwargs": {}}
    header, data = compression.compress(serializers.json_dumps(payload), "zlib")
    envelope = Envelope(data, {"compression": header}, {}, "application/json", "utf-8")
    upgrade_v1(envelope, None)
    assert envelope.headers["task"] == "t"
    assert decode_task_body(envelope, None).args == [7]


def test_v2_messages_are_left_alone_and_non_tasks_refused() -> None:
    v2 = build_task_envelope("t", "i", (), {})
    assert upgrade_v1(v2, None) is v2
    with pytest.raises(InvalidMessageError, match="protocol v1"):
        upgrade_v1(v1_envelope({"just": "data"}), None)
    with pytest.raises(ContentDisallowed):
        upgrade_v1(
            Envelope(b"x", {}, {}, "application/x-python-serialize", "binary"),
            serializers.content_types(["json"]),
        )


# -- times and ids


def test_isoformat_and_parse_datetime() -> None:
    naive = dt.datetime(2024, 1, 1, 12)
    assert isoformat(naive) == "2024-01-01T12:00:00+00:00"
    assert isoformat(None) is None
    assert parse_datetime("2024-01-01T12:00:00") == naive.replace(tzinfo=dt.UTC)
    assert parse_datetime("2024-01-01T14:00:00+02:00") == naive.replace(tzinfo=dt.UTC)
    assert parse_datetime(0) == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert parse_datetime(None) is None and parse_datetime("") is None
    with pytest.raises(InvalidMessageError, match="not-a-date"):
        parse_datetime("not-a-date")


def test_new_task_ids_are_uuid4_strings() -> None:
    batch = new_task_ids(300)
    ids = {new_task_id() for _ in range(200)} | set(batch)
    assert len(batch) == 300 and len(ids) == 500
    for task_id in [*list(ids)[:20], batch[0], batch[-1]]:
        parsed = uuid.UUID(task_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == task_id
    assert new_task_ids(0) == []


# -- what a message says about itself


def test_time_limits() -> None:
    assert time_limits({}) == (None, None) and time_limits({"timelimit": None}) == (None, None)
    assert time_limits({"timelimit": [None, None]}) == (None, None)
    assert time_limits({"timelimit": [10, "2.5"]}) == (10.0, 2.5)
    assert time_limits({"timelimit": (None, 3)}) == (None, 3.0)
    for bad in ([1], [1, 2, 3], ["a", 1], 5, {"hard": 1}):
        with pytest.raises(InvalidMessageError, match="bad timelimit header"):
            time_limits({"timelimit": bad})


def test_expiry_and_eta() -> None:
    when = dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
    stamp = when.timestamp()
    for value in (when.isoformat(), "2024-01-01T12:00:00", stamp, when):
        assert is_expired({"expires": value}, stamp) and is_expired({"expires": value}, stamp + 1)
        assert not is_expired({"expires": value}, stamp - 1)
        assert eta_timestamp({"eta": value}) == stamp
    for none in ({}, {"expires": None, "eta": None}, {"expires": "", "eta": ""}):
        assert not is_expired(none, stamp) and eta_timestamp(none) is None
    with pytest.raises(InvalidMessageError, match="bad expires header: bad timestamp"):
        is_expired({"expires": "soon"}, stamp)
    with pytest.raises(InvalidMessageError, match="bad timestamp"):
        eta_timestamp({"eta": "soon"})


def test_times_lost_counts_only_positive_integers() -> None:
    assert times_lost({}) == 0 and times_lost({LOST_HEADER: 3}) == 3
    for odd in (-1, 0, True, 2.0, "2", None, [2]):
        assert times_lost({LOST_HEADER: odd}) == 0


def test_reply_extra_only_where_results_go_to_the_reply_queue() -> None:
    assert reply_extra({"reply_to": "q"}, needs_reply_to=True) == {"reply_to": "q"}
    assert reply_extra({"reply_to": "q"}, needs_reply_to=False) is None
    assert reply_extra({"reply_to": ""}, needs_reply_to=True) is None
    assert reply_extra({}, needs_reply_to=True) is None


def test_request_from_headers() -> None:
    envelope = build_task_envelope(
        "proj.add", "id-1", (1,), {}, reply_to="r", extra_headers={"custom": "c"}
    )
    body = decode_task_body(envelope, None)
    request = request_from_headers(
        envelope.headers, envelope.properties, body.embed, {"routing_key": "q"}
    )
    assert request["id"] == "id-1" and request["custom"] == "c" and request["retries"] == 0
    assert request["reply_to"] == "r" and request["correlation_id"] == "id-1"
    assert request["delivery_info"] == {"routing_key": "q"} and request["is_eager"] is False
    assert request["headers"] is envelope.headers and request["chain"] is None


# -- result metadata


def test_build_meta() -> None:
    done = build_meta("id", states.SUCCESS, 42, children=[["c", None]], extra={"group_id": "g"})
    assert done["status"] == "SUCCESS" and done["result"] == 42
    assert done["task_id"] == "id" and done["traceback"] is None
    assert done["children"] == [["c", None]] and done["group_id"] == "g"
    assert dt.datetime.fromisoformat(done["date_done"]).tzinfo is not None
    pending = build_meta("id", states.STARTED, {"pid": 1})
    assert pending["date_done"] is None and pending["children"] == []
    for state in (states.FAILURE, states.REVOKED):
        assert build_meta("id", state, None)["date_done"] is not None


class PaymentDeclined(Exception):
    """An exception class that can be found again by module and name."""


def test_builtin_exception_round_trip() -> None:
    stored = exception_to_dict(ValueError("bad", 3))
    assert stored == {"exc_type": "ValueError", "exc_message": ["bad", 3], "exc_module": "builtins"}
    restored = exception_from_dict(serializers.json_loads(serializers.json_dumps(stored)))
    assert type(restored) is ValueError and restored.args == ("bad", 3)


def test_custom_exception_from_a_loaded_module_round_trip() -> None:
    stored = exception_to_dict(PaymentDeclined("card"))
    assert stored["exc_module"] == __name__
    assert stored["exc_type"] == "PaymentDeclined"
    restored = exception_from_dict(stored)
    assert type(restored) is PaymentDeclined and restored.args == ("card",)


def test_unknown_exception_is_synthesized_keeping_its_name() -> None:
    stored = {"exc_type": "GoneError", "exc_message": ["lost"], "exc_module": "remote.errors"}
    restored = exception_from_dict(stored)
    assert type(restored).__name__ == "GoneError"
    assert type(restored).__module__ == "remote.errors"
    assert isinstance(restored, Exception) and restored.args == ("lost",)
    # The same made-up class each time, so except clauses on it keep working.
    assert type(exception_from_dict(stored)) is type(restored)


def test_stored_results_never_import_modules() -> None:
    import sys

    stored = {"exc_type": "Anything", "exc_message": [], "exc_module": "antigravity"}
    exception_from_dict(stored)
    assert "antigravity" not in sys.modules
    # A stored result naming something that is not an exception does not call it.
    os_system = {"exc_type": "system", "exc_message": ["true"], "exc_module": "os"}
    restored = exception_from_dict(os_system)
    assert type(restored).__name__ == "system" and isinstance(restored, Exception)


def test_celery_exception_names_are_mapped_both_ways() -> None:
    stored = exception_to_dict(exceptions.TimeLimitExceeded(10))
    assert stored["exc_module"] == "celery.exceptions"
    assert type(exception_from_dict(stored)) is exceptions.TimeLimitExceeded
    base = exception_to_dict(exceptions.CeleriacError("x"))
    assert base["exc_type"] == "CeleryError"
    assert type(exception_from_dict(base)) is exceptions.CeleriacError
    # Celery peers store time-limit and worker-lost errors from billiard.
    for name in ("TimeLimitExceeded", "SoftTimeLimitExceeded", "WorkerLostError", "Terminated"):
        billiard = {"exc_type": name, "exc_message": [], "exc_module": "billiard.exceptions"}
        assert type(exception_from_dict(billiard)) is getattr(exceptions, name)


def test_unserializable_exception_arguments_travel_as_text() -> None:
    stored = exception_to_dict(KeyError(object()))
    assert stored["exc_type"] == "KeyError"
    assert isinstance(stored["exc_message"][0], str)
    serializers.json_dumps(stored)


def test_exception_whose_constructor_needs_other_arguments() -> None:
    class NeedsTwo(Exception):
        def __init__(self, a: Any, b: Any) -> None:
            super().__init__(f"{a}/{b}")

    stored = {"exc_type": "NeedsTwo", "exc_message": ["only one"], "exc_module": __name__}
    globals()["NeedsTwo"] = NeedsTwo
    try:
        restored = exception_from_dict(stored)
    finally:
        del globals()["NeedsTwo"]
    assert type(restored).__name__ == "NeedsTwo" and restored.args == ("only one",)


def test_non_dict_values_become_exceptions() -> None:
    existing = RuntimeError("as is")
    assert exception_from_dict(existing) is existing
    assert exception_from_dict("text").args == ("text",)


# -- states


def test_state_sets_and_precedence() -> None:
    assert {"SUCCESS", "FAILURE", "REVOKED"} == states.READY_STATES
    assert {"FAILURE", "REVOKED"} == states.PROPAGATE_STATES
    assert {"RETRY", "FAILURE", "REVOKED"} == states.EXCEPTION_STATES
    assert states.state(states.SUCCESS) > states.state(states.STARTED)
    assert states.state(states.PENDING) < states.state(states.RETRY)
    assert states.state("PROGRESS") > states.state(states.PENDING)
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert states.state("PROGRESS") < states.state(states.FAILURE)
    assert states.precedence(states.SUCCESS) < states.precedence(states.PENDING)


@pytest.mark.celery
def test_same_message_as_celerys_as_task_v2() -> None:
    pytest.importorskip("celery")
    from celery import Celery as RealCelery

    real = RealCelery("peer", set_as_current=False)
    theirs = real.amqp.as_task_v2(
        "tid", "peer.add", (2, 2), {"k": 1}, time_limit=10, soft_time_limit=3, shadow="s"
    )
    ours = build_task_envelope(
        "peer.add",
        "tid",
        (2, 2),
        {"k": 1},
        time_limit=10,
        soft_time_limit=3,
        shadow="s",
        origin=theirs.headers["origin"],
    )
    assert ours.headers == theirs.headers
    assert ours.properties["correlation_id"] == theirs.properties["correlation_id"]
    args, kwargs, embed = theirs.body
    decoded = decode_task_body(ours, None)
    assert (tuple(decoded.args), decoded.kwargs, decoded.embed) == (args, kwargs, embed)
