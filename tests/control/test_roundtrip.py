"""Requests and replies between a client and nodes, on the SQLite broker, Redis and RabbitMQ."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from celeriac.control import Request, flatten_reply
from celeriac.protocol.message import Envelope
from tests.control.conftest import Cluster, pong

#: Long enough never to be reached when replies come: calls end by their reply limit.
PATIENCE = 20.0


def pongs(*nodenames: str) -> dict[str, Any]:
    return {name: {"ok": "pong"} for name in nodenames}


def test_ping_gets_a_reply(cluster: Cluster) -> None:
    cluster.node("a@test", {"ping": pong})

    assert cluster.control.ping(destination=["a@test"], timeout=PATIENCE) == [
        {"a@test": {"ok": "pong"}}
    ]
    assert cluster.control.inspect(["a@test"], timeout=PATIENCE).ping() == {
        "a@test": {"ok": "pong"}
    }


def test_several_nodes_answer_one_broadcast(cluster: Cluster) -> None:
    for name in ("a@test", "b@test", "c@test"):
        cluster.node(name, {"ping": pong})

    replies = cluster.control.broadcast("ping", reply=True, limit=3, timeout=PATIENCE)
    assert replies is not None
    assert flatten_reply(replies) == pongs("a@test", "b@test", "c@test")
    # Without a limit, every reply that comes within the timeout.
    assert cluster.control.inspect(timeout=2.0).ping() == pongs("a@test", "b@test", "c@test")


def test_only_the_destination_nodes_run_the_command(cluster: Cluster) -> None:
    calls: list[str] = []

    def handlers(name: str) -> dict[str, Any]:
        return {"ping": lambda: calls.append(name) or {"ok": "pong"}}

    for name in ("a@test", "b@test", "c@test"):
        cluster.node(name, handlers(name))

    replies = cluster.control.ping(destination=["a@test", "c@test"], timeout=PATIENCE)
    assert replies is not None
    assert flatten_reply(replies) == pongs("a@test", "c@test")
    # b took both requests in order: once it answers the second, it has skipped the first.
    assert cluster.control.ping(destination=["b@test"], timeout=PATIENCE) == [
        {"b@test": {"ok": "pong"}}
    ]
    assert sorted(calls) == ["a@test", "b@test", "c@test"]


@pytest.mark.parametrize(
    ("pattern", "matcher", "expected"),
    [
        ("[ab]@*", "glob", ["a@test", "b@test"]),
        ("^(b|c)@", "pcre", ["b@test", "c@test"]),
    ],
)
def test_pattern_selects_nodes(
    cluster: Cluster, pattern: str, matcher: str, expected: list[str]
) -> None:
    for name in ("a@test", "b@test", "c@test"):
        cluster.node(name, {"ping": pong})

    inspect = cluster.control.inspect(
        timeout=PATIENCE, limit=len(expected), pattern=pattern, matcher=matcher
    )
    assert inspect.ping() == pongs(*expected)


def test_collecting_stops_at_the_limit_or_the_timeout(cluster: Cluster) -> None:
    for name in ("a@test", "b@test", "c@test"):
        cluster.node(name, {"ping": pong})

    started = time.monotonic()
    replies = cluster.control.broadcast("ping", reply=True, limit=2, timeout=PATIENCE)
    assert replies is not None and len(replies) == 2
    assert time.monotonic() - started < PATIENCE / 2

    # One destination never answers: the other's reply, once the timeout is over. The
    # third reply of the call above, arriving late, is not taken for one of this call.
    started = time.monotonic()
    replies = cluster.control.ping(destination=["a@test", "ghost@test"], timeout=0.5)
    assert replies == [{"a@test": {"ok": "pong"}}]
    assert 0.5 <= time.monotonic() - started < PATIENCE / 2


def test_replies_reach_the_callback_as_they_come(cluster: Cluster) -> None:
    for name in ("a@test", "b@test"):
        cluster.node(name, {"ping": pong})
    seen: list[dict[str, Any]] = []

    replies = cluster.control.broadcast(
        "ping", reply=True, destination=["a@test", "b@test"], timeout=PATIENCE, callback=seen.append
    )

    assert replies is not None and sorted(map(str, seen)) == sorted(map(str, replies))


def test_expired_requests_are_ignored(cluster: Cluster) -> None:
    done: list[int] = []
    cluster.node("a@test", {"record": lambda n: done.append(n) or {"ok": n}})
    mailbox = cluster.control.mailbox
    sender = cluster.transport()
    expired = Request("record", {"n": 1}, expires=time.time() - 1)
    sender.publish([mailbox.request_envelope(expired)])

    # The node takes requests in order: once it answers this one it has seen the other.
    replies = cluster.control.broadcast(
        "record", {"n": 2}, destination=["a@test"], reply=True, timeout=PATIENCE
    )

    assert replies == [{"a@test": {"ok": 2}}]
    assert done == [2]


def test_a_command_argument_travels_as_a_keyword(cluster: Cluster) -> None:
    cluster.node("a@test", {"echo": lambda **arguments: {"ok": arguments}})

    replies = cluster.control.broadcast(
        "echo", {"x": [1, "two"]}, ["a@test"], reply=True, timeout=PATIENCE, y=None
    )

    assert replies == [{"a@test": {"ok": {"x": [1, "two"], "y": None}}}]


def test_errors_become_error_replies(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    cluster.node("a@test", {"ping": pong, "fail": lambda: 1 / 0, "odd": lambda: {"ok": object()}})

    def call(command: str, **arguments: Any) -> Any:
        replies = cluster.control.broadcast(
            command, arguments, ["a@test"], reply=True, timeout=PATIENCE
        )
        assert replies is not None and len(replies) == 1
        return replies[0]["a@test"]

    with caplog.at_level(logging.ERROR, logger="celeriac.control"):
        assert call("fail") == {"error": "ZeroDivisionError('division by zero')"}
        assert call("nosuch") == {"error": "unknown command 'nosuch'"}
        assert "TypeError" in call("ping", unexpected=1)["error"]
        assert "cannot be serialized" in call("odd")["error"]

    unknown = [r for r in caplog.records if "Unknown control command" in r.getMessage()]
    assert len(unknown) == 1 and "nosuch" in unknown[0].getMessage()


def _bad(body: bytes, headers: dict[str, Any] | None = None, content_type: str = "") -> Any:
    return (body, headers or {}, content_type or "application/json")


MALFORMED = [
    _bad(b"{not json"),
    _bad(b"[1, 2]"),
    _bad(b'{"method": 5}'),
    _bad(b'{"method": "ping", "arguments": [1]}'),
    _bad(b'{"method": "ping", "destination": "a@test"}'),
    _bad(b'{"method": "ping", "pattern": "a*", "matcher": "soundex"}'),
    _bad(b'{"method": "ping", "pattern": "(", "matcher": "pcre"}'),
    _bad(b'{"method": "ping", "ticket": "t", "reply_to": "nowhere"}'),
    _bad(b'{"method": "ping"}', {"clock": "soon"}),
    _bad(b'{"method": "ping"}', {"expires": [1]}),
    # Not in accept_content: never unpickled.
    _bad(b"\x80\x04K\x01.", content_type="application/x-python-serialize"),
]


def test_malformed_requests_are_skipped_with_one_log_line(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.node("a@test", {"ping": pong})
    exchange = cluster.control.mailbox.exchange
    envelopes = [
        Envelope(body, headers, {"delivery_mode": 2}, content_type, "utf-8", exchange=exchange)
        for body, headers, content_type in MALFORMED
    ]

    with caplog.at_level(logging.ERROR, logger="celeriac.control"):
        cluster.transport().publish(envelopes)
        # Taken after the bad ones, so answered once they were all skipped.
        replies = cluster.control.ping(destination=["a@test"], timeout=PATIENCE)

    assert replies == [{"a@test": {"ok": "pong"}}]
    skipped = [r for r in caplog.records if "malformed control request" in r.getMessage()]
    assert len(skipped) == len(MALFORMED), [r.getMessage() for r in skipped]
