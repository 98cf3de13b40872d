"""Event messages without a broker: the standard events' fields, encoding, decoding."""

from __future__ import annotations

import datetime as dt

import pytest

from celeriac.events import standard
from celeriac.events.exchange import EventSettings
from celeriac.events.message import decode, encode, group_of, routing_key_of
from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol.limits import Limits
from celeriac.protocol.message import Envelope

#: The fields Celery's workers and clients send with each event (besides the stamped ones).
CELERY_FIELDS = {
    "task-sent": {
        "uuid",
        "root_id",
        "parent_id",
        "name",
        "args",
        "kwargs",
        "retries",
        "eta",
        "expires",
        "queue",
        "exchange",
        "routing_key",
    },
    "task-received": {
        "uuid",
        "name",
        "args",
        "kwargs",
        "root_id",
        "parent_id",
        "retries",
        "eta",
        "expires",
    },
    "task-started": {"uuid"},
    "task-succeeded": {"uuid", "result", "runtime"},
    "task-failed": {"uuid", "exception", "traceback"},
    "task-retried": {"uuid", "exception", "traceback"},
    "task-rejected": {"uuid", "requeue"},
    "task-revoked": {"uuid", "terminated", "signum", "expired"},
    "task-cancelled": {"uuid"},
}
WORKER_FIELDS = {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}


def _standard_events() -> list[dict[str, object]]:
    error = KeyError("k")
    return [
        standard.task_sent("i", "n", args="()", kwargs="{}", queue="q", routing_key="q"),
        standard.task_received("i", "n", args="()", kwargs="{}"),
        standard.task_started("i"),
        standard.task_succeeded("i", "1", 0.1),
        standard.task_failed("i", error, "tb"),
        standard.task_retried("i", error, "tb"),
        standard.task_rejected("i", requeue=False),
        standard.task_revoked("i", terminated=True, signum=15),
        standard.task_cancelled("i"),
    ]


def test_task_events_have_celerys_fields() -> None:
    events = _standard_events()
    assert {event["type"]: set(event) - {"type"} for event in events} == CELERY_FIELDS


@pytest.mark.parametrize("kind", ["online", "heartbeat", "offline"])
def test_worker_events_have_celerys_fields(kind: str) -> None:
    event = getattr(standard, f"worker_{kind}")(freq=2.0, active=1, processed=2)
    assert event["type"] == f"worker-{kind}"
    assert set(event) - {"type"} == WORKER_FIELDS
    assert len(event["loadavg"]) == 3
    assert all(isinstance(load, float) for load in event["loadavg"])


def test_values_travel_as_celery_sends_them() -> None:
    eta = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    received = standard.task_received("i", "n", args="(1,)", kwargs="{}", eta=eta)
    assert received["eta"] == "2030-01-02T03:04:05+00:00"
    assert standard.task_failed("i", ValueError("x" * 5000), "tb")["exception"] == (
        "ValueError('" + "x" * 5000 + "')"  # an exception's repr is not cut
    )
    assert standard.task_failed("i", "KeyError('k')", "tb")["exception"] == "KeyError('k')"
    long_result = standard.result_repr(list(range(2000)))
    assert len(long_result) == standard.RESULT_REPR_MAXSIZE and long_result.endswith("...")


def test_routing_keys_and_groups() -> None:
    assert routing_key_of("task-succeeded") == "task.succeeded"
    assert routing_key_of("worker-heartbeat") == "worker.heartbeat"
    assert group_of("task-sent") == "task"
    assert group_of("custom-my-event") == "custom"


def test_one_event_and_an_array_decode() -> None:
    one = {"type": "task-started", "uuid": "a"}
    envelope = encode(one, hostname="h", exchange="celeryev", routing_key="task.started")
    assert decode(envelope) == [one]
    batch = [one, {"type": "task-started", "uuid": "b"}]
    assert decode(encode(batch, hostname="h", exchange="x", routing_key="task.multi")) == batch


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", DecodeError),
        (b"[1]", DecodeError),
        (b"[]", None),
        (b'{"type": 3}', DecodeError),
        (b'{"uuid": "a"}', DecodeError),
        (b"null", DecodeError),
    ],
)
def test_what_is_no_event_does_not_decode(body: bytes, error: type[Exception] | None) -> None:
    envelope = Envelope(body, {}, {})
    if error is None:
        assert decode(envelope) == []
    else:
        with pytest.raises(error):
            decode(envelope)


def test_decoding_honours_accept_and_size() -> None:
    pickled = Envelope(b"\x80\x04N.", {}, {}, "application/x-python-serialize", "binary")
    with pytest.raises(ContentDisallowed):
        decode(pickled, frozenset({"application/json"}))
    big = Envelope(b'{"type": "x", "pad": "' + b"a" * 100 + b'"}', {}, {})
    with pytest.raises(DecodeError):
        decode(big, limits=Limits(max_message_bytes=50))


def test_settings_refuse_an_exclusive_durable_queue() -> None:
    with pytest.raises(ImproperlyConfigured):
        EventSettings(queue_exclusive=True, queue_durable=True)
    assert EventSettings(queue_exclusive=False, queue_durable=True).queue_durable
