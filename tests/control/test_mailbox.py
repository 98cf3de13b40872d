"""The mailbox layout and message shapes (Celery's), and the node and caller without a broker."""

from __future__ import annotations

import logging
import threading
from typing import Any

import orjson
import pytest

import celeriac
from celeriac.control import Broadcaster, LamportClock, Mailbox, Node, Reply, ReplyTo, Request
from celeriac.control import node as node_module
from celeriac.control.client import flatten_reply
from celeriac.control.mailbox import MalformedMessage, name_matches
from celeriac.exceptions import DuplicateNodenameWarning, ImproperlyConfigured, OperationalError
from celeriac.protocol.message import Envelope
from celeriac.transports.memory import MemoryTransport
from celeriac.wire.queues import QueueSpec

CELERY_QUEUE_ARGUMENTS = {"x-expires": 10_000, "x-message-ttl": 300_000}


def test_layout_is_celerys() -> None:
    mailbox = Mailbox()

    assert mailbox.exchange == "celery.pidbox"
    assert mailbox.reply_exchange == "reply.celery.pidbox"
    assert mailbox.node_queue("w1@host") == QueueSpec(
        "w1@host.celery.pidbox",
        exchange="celery.pidbox",
        exchange_type="fanout",
        routing_key="",
        durable=False,
        auto_delete=True,
        exclusive=False,
        arguments=CELERY_QUEUE_ARGUMENTS,
    )
    assert mailbox.reply_queue("c0ffee") == QueueSpec(
        "c0ffee.reply.celery.pidbox",
        exchange="reply.celery.pidbox",
        exchange_type="direct",
        routing_key="c0ffee",
        durable=False,
        auto_delete=True,
        exclusive=False,
        arguments=CELERY_QUEUE_ARGUMENTS,
    )


def test_mailbox_follows_the_control_settings() -> None:
    app = celeriac.Celery(
        "settings",
        control_exchange="ops",
        control_queue_ttl=None,
        control_queue_expires=2.5,
        control_queue_durable=True,
        accept_content=["json", "msgpack"],
    )
    mailbox = Mailbox.from_settings(app.conf)
    queue = mailbox.node_queue("w1@host")

    assert queue.name == "w1@host.ops.pidbox" and queue.exchange == "ops.pidbox"
    assert (queue.durable, queue.auto_delete, queue.arguments) == (True, False, {"x-expires": 2500})
    assert mailbox.accept == {"application/json", "application/x-msgpack"}

    app.conf.control_queue_exclusive = True
    with pytest.raises(ImproperlyConfigured, match="cannot both be True"):
        Mailbox.from_settings(app.conf)


def test_request_message_is_celerys() -> None:
    mailbox = Mailbox()
    request = Request(
        "revoke",
        {"task_id": "t1", "terminate": False, "signal": "SIGTERM"},
        destination=("w1@host",),
        ticket="tk",
        reply_to=ReplyTo("reply.celery.pidbox", "c0ffee"),
        clock=7,
        expires=1234.5,
    )

    envelope = mailbox.request_envelope(request)

    assert orjson.loads(envelope.body) == {
        "method": "revoke",
        "arguments": {"task_id": "t1", "terminate": False, "signal": "SIGTERM"},
        "destination": ["w1@host"],
        "pattern": None,
        "matcher": None,
        "ticket": "tk",
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "c0ffee"},
    }
    assert envelope.headers == {"clock": 7, "expires": 1234.5}
    assert envelope.properties == {"delivery_mode": 2}
    assert (envelope.content_type, envelope.exchange, envelope.routing_key) == (
        "application/json",
        "celery.pidbox",
        "",
    )
    assert mailbox.parse_request(envelope) == request
    # Without replies wanted: no ticket, no reply_to (Celery's fire-and-forget shape).
    cast = orjson.loads(mailbox.request_envelope(Request("ping", {})).body)
    assert set(cast) == {"method", "arguments", "destination", "pattern", "matcher"}


def test_reply_message_is_celerys() -> None:
    mailbox = Mailbox()
    reply = Reply({"w1@host": {"ok": "pong"}}, "tk", clock=3)

    envelope = mailbox.reply_envelope(reply, ReplyTo("reply.celery.pidbox", "c0ffee"))

    assert orjson.loads(envelope.body) == {"w1@host": {"ok": "pong"}}
    assert envelope.headers == {"ticket": "tk", "clock": 3}
    assert envelope.properties == {"delivery_mode": 1}
    assert (envelope.exchange, envelope.routing_key) == ("reply.celery.pidbox", "c0ffee")
    assert mailbox.parse_reply(envelope) == reply


@pytest.mark.parametrize(
    ("request_", "addressed"),
    [
        (Request("ping", {}), True),
        (Request("ping", {}, destination=()), True),
        (Request("ping", {}, destination=("w1@host", "w2@host")), True),
        (Request("ping", {}, destination=("w2@host",)), False),
        (Request("ping", {}, pattern="w*@host", matcher="glob"), True),
        (Request("ping", {}, pattern="w2*", matcher="glob"), False),
        (Request("ping", {}, pattern=r"w\d@", matcher="pcre"), True),
        (Request("ping", {}, pattern="host", matcher="pcre"), False),  # matched at the start
        # A destination wins over a pattern; a pattern needs its matcher.
        (Request("ping", {}, ("w2@host",), pattern="w1*", matcher="glob"), False),
        (Request("ping", {}, pattern="nothing"), True),
    ],
)
def test_who_a_request_is_for(request_: Request, addressed: bool) -> None:
    assert request_.addressed_to("w1@host") is addressed


def test_an_unknown_matcher_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown matcher"):
        name_matches("w1@host", "w1*", "soundex")


def test_malformed_messages_raise_one_error_type() -> None:
    mailbox = Mailbox()
    bodies = [b"{", b"1", b'{"method": ""}', b'{"method": "p", "destination": [1]}']
    for body in bodies:
        with pytest.raises(MalformedMessage):
            mailbox.parse_request(Envelope(body, {}, {}))
    with pytest.raises(MalformedMessage, match="accept"):
        mailbox.parse_request(Envelope(b"", {}, {}, "application/x-python-serialize"))
    with pytest.raises(MalformedMessage, match="ticket"):
        mailbox.parse_reply(Envelope(b"{}", {"ticket": 5}, {}))


def test_lamport_clock() -> None:
    clock = LamportClock()
    assert clock.forward() == 1
    assert clock.adjust(10) == 11
    assert clock.adjust(3) == 12
    assert clock.value == 12


def test_flatten_reply_warns_of_a_name_heard_twice() -> None:
    assert flatten_reply([{"a": 1}, {"b": 2}]) == {"a": 1, "b": 2}
    with pytest.warns(DuplicateNodenameWarning, match="a"):
        assert flatten_reply([{"a": 1}, {"a": 2}]) == {"a": 2}


# -- node and caller, driven step by step on the in-process broker ------------------------


@pytest.fixture
def memory_url(request: pytest.FixtureRequest) -> str:
    return f"memory://control-{request.node.name}"


def test_a_request_without_reply_to_runs_and_sends_nothing(memory_url: str) -> None:
    calls: list[dict[str, Any]] = []
    mailbox = Mailbox()
    transport = MemoryTransport(memory_url)
    node = Node("w1@host", mailbox, transport, {"revoke": lambda **kw: calls.append(kw)})
    node.listen()
    caller = Broadcaster(mailbox, MemoryTransport(memory_url))

    assert caller.broadcast("revoke", {"task_id": "t1"}) is None
    assert node.handle_pending(timeout=1.0) == 1

    assert calls == [{"task_id": "t1"}]
    assert transport.size(node.queue) == 0


def test_systemexit_from_a_handler_goes_through(memory_url: str) -> None:
    def shutdown() -> None:
        raise SystemExit("stop")

    mailbox = Mailbox()
    node = Node("w1@host", mailbox, MemoryTransport(memory_url), {"shutdown": shutdown})

    with pytest.raises(SystemExit):
        node.handle(mailbox.request_envelope(Request("shutdown", {})))


def test_clocks_move_past_what_they_receive(memory_url: str) -> None:
    mailbox = Mailbox()
    node = Node("w1@host", mailbox, MemoryTransport(memory_url), {"ping": lambda: "pong"})
    reply_to = ReplyTo(mailbox.reply_exchange, "c0ffee")

    envelope = node.handle(
        mailbox.request_envelope(Request("ping", {}, None, clock=41, ticket="t", reply_to=reply_to))
    )

    assert envelope is not None
    assert mailbox.parse_reply(envelope).clock == 43  # adjusted to 42, then one send
    assert node.clock.value == 43


def test_the_caller_skips_bad_and_foreign_replies(
    memory_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    mailbox = Mailbox()
    caller = Broadcaster(mailbox, MemoryTransport(memory_url))
    reply_to = ReplyTo(mailbox.reply_exchange, caller.caller_id)
    sender = MemoryTransport(memory_url)
    caller.transport.declare([mailbox.reply_queue(caller.caller_id)])
    sender.publish(
        [
            mailbox.reply_envelope(Reply({"old": "reply"}, "another ticket"), reply_to),
            mailbox.reply_envelope(Reply({"stray": "reply"}, None), reply_to),
            Envelope(b"[]", {}, {}, exchange=reply_to.exchange, routing_key=reply_to.routing_key),
        ]
    )

    with caplog.at_level(logging.ERROR, logger="celeriac.control"):
        assert caller.broadcast("ping", reply=True, timeout=0.2) == []

    assert ["malformed" in record.getMessage() for record in caplog.records] == [True]


class FailingOnce(MemoryTransport):
    """Its first fetch fails as a lost broker would."""

    failed = False

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise OperationalError("the broker went away")
        return super().fetch(*args, **kwargs)


def test_a_running_node_outlives_a_broker_failure(
    memory_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "_RETRY_PAUSE", 0.01)
    mailbox = Mailbox()
    stop = threading.Event()
    node = Node("w1@host", mailbox, FailingOnce(memory_url), {"ping": lambda: {"ok": "pong"}})
    node.listen()  # before the broadcast below: run() declares again, which changes nothing
    thread = threading.Thread(target=node.run, args=(stop, 0.05))

    with caplog.at_level(logging.ERROR, logger="celeriac.control"):
        thread.start()
        try:
            replies = Broadcaster(mailbox, MemoryTransport(memory_url)).broadcast(
                "ping", reply=True, destination=["w1@host"], timeout=20
            )
        finally:
            stop.set()
            thread.join(20)

    assert replies == [{"w1@host": {"ok": "pong"}}]
    assert ["the broker went away" in r.getMessage() for r in caplog.records] == [True]
