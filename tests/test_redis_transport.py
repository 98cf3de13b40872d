"""The Redis transport against real kombu/Celery peers, and its Redis-specific behaviour.

Database 11 of the local Redis belongs to these tests. Every test uses names with a fresh
random part, and the ``names`` fixture deletes every key containing it afterwards.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Envelope, build_task_envelope, decode_task_body
from celeriac.transports import TransportOptions, create_transport
from celeriac.transports.redis import RedisTransport
from celeriac.transports.redis.keyspace import KeySpace, topic_pattern
from celeriac.wire.queues import Delivery, QueueSpec

celery: Any = pytest.importorskip("celery")
kombu: Any = pytest.importorskip("kombu")

pytestmark = [pytest.mark.redis, pytest.mark.celery]

URL = "redis://127.0.0.1:6379/11"
SEP = "\x06\x16"
#: Options that make dead holders visible within about a second.
FAST_HOLDERS = {
    "holder_heartbeat_interval": 0.2,
    "holder_expires": 1.0,
    "holder_check_interval": 0.2,
}


class Names:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]

    def __call__(self, name: str) -> str:
        return f"wire-{self.tag}-{name}"


@pytest.fixture
def names() -> Iterator[Names]:
    made = Names()
    yield made
    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=f"*{made.tag}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def transports() -> Iterator[list[RedisTransport]]:
    """Transports a test creates; all closed afterwards."""
    created: list[RedisTransport] = []
    yield created
    for transport in created:
        transport.close()


def new_transport(created: list[RedisTransport], **options: object) -> RedisTransport:
    transport = RedisTransport(URL, TransportOptions(transport_options=options))
    created.append(transport)
    return transport


@pytest.fixture
def celery_app() -> Iterator[Any]:
    app = celery.Celery("wire", broker=URL, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    yield app
    app.close()


def envelope_for(queue: str, number: int, priority: int = 0, **extra: object) -> Envelope:
    envelope = build_task_envelope(
        "proj.add", str(uuid.uuid4()), (number, 1), {"flag": True}, priority=priority
    )
    envelope.routing_key = queue
    envelope.headers.update(extra)
    return envelope


# -- Celery/kombu producers → celeriac -----------------------------------------------------


def test_celery_send_task_is_fetched_and_decoded(
    celery_app: Any, names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("from-celery")
    result = celery_app.send_task(
        "proj.add",
        args=(2, 3),
        kwargs={"z": 1},
        queue=queue,
        countdown=60,
        time_limit=10,
        soft_time_limit=3,
        headers={"custom": "yes"},
    )
    consumer = new_transport(transports)

    [delivery] = consumer.fetch([queue], 10, 5.0)

    envelope = delivery.envelope
    assert envelope.headers["task"] == "proj.add"
    assert envelope.headers["id"] == result.id
    assert envelope.headers["timelimit"] == [10, 3]
    assert envelope.headers["custom"] == "yes"
    assert envelope.headers["eta"] is not None
    assert envelope.properties["correlation_id"] == result.id
    assert (envelope.exchange, envelope.routing_key, delivery.queue) == ("", queue, queue)
    assert delivery.redelivered is False
    body = decode_task_body(envelope, frozenset({"application/json"}))
    assert (body.args, body.kwargs) == ([2, 3], {"z": 1})
    assert body.embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    consumer.ack([delivery])
    assert consumer.size(queue) == 0


def test_celery_priorities_follow_kombus_order(
    celery_app: Any, names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    queue = names("celery-priorities")
    for number, priority in enumerate([9, 3, 0, 6]):
        celery_app.send_task("proj.add", args=(number,), queue=queue, priority=priority)
    # kombu filed them in the priority sub-lists.
    assert raw.llen(f"{queue}{SEP}9") == 1 and raw.llen(queue) == 1

    deliveries = new_transport(transports).fetch([queue], 10, 5.0)

    # On Redis 0 is the highest priority, in Celery and here alike.
    assert [d.envelope.properties["priority"] for d in deliveries] == [0, 3, 6, 9]


def test_kombu_topic_binding_routes_celeriac_messages(
    names: Names, transports: list[RedisTransport]
) -> None:
    exchange_name, queue_name = names("logs"), names("errors")
    with kombu.Connection(URL) as connection:
        exchange = kombu.Exchange(exchange_name, type="topic")
        queue = kombu.Queue(queue_name, exchange, routing_key="*.error")
        queue(connection.default_channel).declare()
        producer = new_transport(transports)
        producer.publish(
            [
                Envelope(b"1", {"n": 1}, {}, exchange=exchange_name, routing_key="db.error"),
                Envelope(b"2", {"n": 2}, {}, exchange=exchange_name, routing_key="db.info"),
            ]
        )
        with connection.SimpleQueue(queue) as simple:
            message = simple.get(timeout=5)
            assert message.headers["n"] == 1
            message.ack()
            with pytest.raises(simple.Empty):
                simple.get(timeout=0.2)


def test_kombu_fanout_broadcast_reaches_a_celeriac_pidbox_queue(
    names: Names, transports: list[RedisTransport]
) -> None:
    listener = new_transport(transports)
    mailbox = names("node.celery.pidbox")
    listener.declare([QueueSpec(mailbox, exchange="celery.pidbox", exchange_type="fanout")])
    body: dict[str, object] = {"method": "ping", "arguments": {}, "destination": None}

    with kombu.Connection(URL) as connection:
        exchange = kombu.Exchange("celery.pidbox", type="fanout", durable=False)
        connection.Producer().publish(body, exchange=exchange, declare=[exchange])

    [delivery] = listener.fetch([mailbox], 10, 5.0)
    assert decode_task_body_payload(delivery.envelope) == body


def decode_task_body_payload(envelope: Envelope) -> object:
    from celeriac.protocol import serializers

    return serializers.loads(envelope.body, envelope.content_type)


def test_fetch_wakes_up_when_kombu_publishes(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("wake")
    consumer = new_transport(transports)
    consumer.fetch([queue], 1, 0)
    received: list[Delivery] = []
    returned_at: list[float] = []

    def wait() -> None:
        received.extend(consumer.fetch([queue], 1, 10.0))
        returned_at.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    with kombu.Connection(URL) as connection, connection.SimpleQueue(queue) as simple:
        time.sleep(0.2)  # the consumer is asleep now: the point is that a push wakes it
        simple.put({"hello": 1})
        published_at = time.monotonic()
    waiter.join(10.0)

    assert len(received) == 1
    # Woken by Redis, not by the safety-net timeout of a second.
    assert returned_at[0] - published_at < 0.5


# -- celeriac → kombu consumers ------------------------------------------------------------


def test_celeriac_envelope_is_consumed_by_kombu(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("to-kombu")
    envelope = build_task_envelope(
        "proj.add",
        "f00d-id",
        (2, 2),
        {},
        priority=3,
        reply_to="reply-q",
        eta="2030-01-01T00:00:00+00:00",
    )
    envelope.routing_key = queue
    new_transport(transports).publish([envelope])

    with kombu.Connection(URL) as connection, connection.SimpleQueue(queue) as simple:
        message = simple.get(timeout=5)
        assert message.headers == envelope.headers
        assert message.body == envelope.body
        assert message.content_type == "application/json"
        assert message.content_encoding == "utf-8"
        assert message.properties["priority"] == 3
        assert message.properties["correlation_id"] == "f00d-id"
        assert message.properties["reply_to"] == "reply-q"
        assert message.delivery_info["routing_key"] == queue
        assert message.delivery_info["exchange"] == ""
        assert uuid.UUID(message.delivery_tag).version == 4
        assert message.payload == [
            [2, 2],
            {},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        ]
        message.ack()


def test_kombu_consumer_sees_celeriac_priorities_in_its_order(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("to-kombu-priorities")
    producer = new_transport(transports)
    producer.publish([envelope_for(queue, n, priority) for n, priority in enumerate([9, 0, 6])])

    with kombu.Connection(URL) as connection, connection.SimpleQueue(queue) as simple:
        seen = []
        for _ in range(3):
            message = simple.get(timeout=5)
            seen.append(message.properties["priority"])
            message.ack()
    assert seen == [0, 6, 9]


def test_global_keyprefix_matches_kombus(names: Names, transports: list[RedisTransport]) -> None:
    prefix, queue = names("app:"), names("prefixed")
    new_transport(transports, global_keyprefix=prefix).publish([envelope_for(queue, 1)])

    options = {"global_keyprefix": prefix}
    with (
        kombu.Connection(URL, transport_options=options) as connection,
        connection.SimpleQueue(queue) as simple,
    ):
        message = simple.get(timeout=5)
        assert message.headers["task"] == "proj.add"
        message.ack()


def test_declared_bindings_are_kombus(
    names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    exchange, direct, topic = names("ex"), names("direct"), names("topic")
    new_transport(transports).declare(
        [
            QueueSpec(direct, exchange=exchange, routing_key="key"),
            QueueSpec(topic, exchange=exchange + "t", exchange_type="topic", routing_key="a.#"),
        ]
    )
    assert raw.smembers(f"_kombu.binding.{exchange}") == {f"key{SEP}{SEP}{direct}".encode()}
    assert raw.smembers(f"_kombu.binding_permanent.{exchange}") == {
        f"key{SEP}{SEP}{direct}".encode()
    }
    assert raw.smembers(f"_kombu.binding.{exchange}t") == {
        f"a.#{SEP}^a\\..*?${SEP}{topic}".encode()
    }


# -- holding: liveness, not timeouts --------------------------------------------------------

_DIE_HOLDING = """
import os, sys
from celeriac.transports import TransportOptions
from celeriac.transports.redis import RedisTransport
options = TransportOptions(transport_options=dict(holder_heartbeat_interval=0.2,
                                                  holder_expires=1.0))
transport = RedisTransport(sys.argv[1], options)
held = transport.fetch([sys.argv[2]], 10, 5.0)
print(len(held), flush=True)
os._exit(0)  # no ack, no close: a dead holder
"""


def test_messages_of_a_dead_process_come_back_flagged(
    names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    queue = names("dead")
    consumer = new_transport(transports, **FAST_HOLDERS)
    consumer.publish([envelope_for(queue, n) for n in range(2)])
    package_root = Path(__file__).resolve().parents[1]

    child = subprocess.run(
        [sys.executable, "-c", _DIE_HOLDING, URL, queue],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(package_root)},
        check=True,
    )
    assert child.stdout.strip() == "2"
    assert consumer.size(queue) == 0
    assert not raw.exists("unacked")  # kombu's hash is never used

    back: list[Delivery] = []
    deadline = time.monotonic() + 10
    while len(back) < 2 and time.monotonic() < deadline:
        back += consumer.fetch([queue], 10, deadline - time.monotonic())

    assert sorted(decode_task_body(d.envelope, None).args[0] for d in back) == [0, 1]
    assert all(d.redelivered for d in back)
    # kombu consumers see the flags too.
    consumer.reject(back, requeue=True)
    with kombu.Connection(URL) as connection, connection.SimpleQueue(queue) as simple:
        message = simple.get(timeout=5)
        assert message.delivery_info.get("redelivered") is True
        assert message.headers["redelivered"] is True
        message.ack()


def test_a_live_holder_keeps_messages_past_many_checks(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("live")
    holder = new_transport(transports, **FAST_HOLDERS)
    other = new_transport(transports, **FAST_HOLDERS)
    holder.publish([envelope_for(queue, 1)])
    held = holder.fetch([queue], 10, 5.0)
    assert len(held) == 1

    # Two expiry periods, ten checks by each transport: nothing comes back.
    assert other.fetch([queue], 10, 2.0) == []

    holder.ack(held)
    holder.close()
    assert other.fetch([queue], 10, 0.3) == []


def test_close_gives_back_in_fetch_order(names: Names, transports: list[RedisTransport]) -> None:
    queue = names("close-order")
    holder, other = new_transport(transports), new_transport(transports)
    holder.publish([envelope_for(queue, n) for n in range(4)])
    held = holder.fetch([queue], 3, 5.0)

    holder.close()
    again = other.fetch([queue], 10, 5.0)

    assert [d.envelope.headers["id"] for d in again[:3]] == [d.envelope.headers["id"] for d in held]
    assert [d.redelivered for d in again] == [True, True, True, False]


# -- connections -----------------------------------------------------------------------------


def test_recovers_when_its_connections_are_killed(
    names: Names,
    transports: list[RedisTransport],
    raw: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = names("reconnect")
    transport = new_transport(transports)
    transport.publish([envelope_for(queue, 1)])
    assert len(transport.fetch([queue], 10, 5.0)) == 1
    own = {client["id"] for client in raw.client_list() if client["db"] == "11"}
    own.discard(str(raw.client_id()))

    for client_id in own:
        raw.client_kill_filter(_id=client_id)
    with caplog.at_level(logging.WARNING, logger="celeriac.transports.redis"):
        transport.publish([envelope_for(queue, 2)])
        [delivery] = transport.fetch([queue], 10, 5.0)

    assert delivery.envelope.headers["argsrepr"] == "(2, 1)"
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert 1 <= len(retries) <= 2
    assert all(r.exc_info is None for r in retries)


def test_unreachable_server_fails_after_the_retries(caplog: pytest.LogCaptureFixture) -> None:
    transport = RedisTransport(
        "redis://:secret@127.0.0.1:1/0",
        TransportOptions(connection_max_retries=2, connection_timeout=0.5),
    )
    with (
        caplog.at_level(logging.WARNING, logger="celeriac.transports.redis"),
        pytest.raises(ConnectionError, match="after 2 retries"),
    ):
        transport.publish([envelope_for("q", 1)])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all("retry" in line and "secret" not in line for line in lines)
    transport.close()


def test_registry_creates_the_redis_transport() -> None:
    transport = create_transport(URL)
    assert isinstance(transport, RedisTransport)
    assert transport.capabilities.cross_process and transport.capabilities.fanout
    # kombu's order (0 first) is not the contract's "higher first".
    assert not transport.capabilities.priorities
    transport.close()


def test_bad_options_are_configuration_errors() -> None:
    with pytest.raises(ImproperlyConfigured, match="priority_order"):
        KeySpace.from_options({"priority_order": "random"}, db=0)


def test_keyspace_follows_kombu() -> None:
    keys = KeySpace.from_options({}, db=5)
    assert [keys.step_of(p) for p in (0, 2, 3, 5, 6, 9, 12, None, "x")] == [
        0,
        0,
        3,
        3,
        6,
        9,
        9,
        0,
        0,
    ]
    assert keys.list_keys("q") == ["q", f"q{SEP}3", f"q{SEP}6", f"q{SEP}9"]
    assert keys.fanout_channel("celeryev", "worker.heartbeat") == "/5.celeryev/worker.heartbeat"
    assert keys.fanout_subscriptions("celeryev", "worker.#") == ["/5.celeryev/worker.*"]
    assert keys.fanout_subscriptions("celery.pidbox", "") == [
        "/5.celery.pidbox",
        "/5.celery.pidbox/*",
    ]
    assert topic_pattern("*.error") == r"^[^\.]+\.error$"
    inverted = KeySpace.from_options({"priority_order": "higher_first"}, db=0)
    assert [inverted.step_of(p) for p in (9, 6, 3, 0)] == [0, 3, 6, 9]


def test_fetched_raw_garbage_is_delivered_for_the_worker_to_reject(
    names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    queue = names("garbage")
    raw.lpush(queue, b"not json")
    [delivery] = new_transport(transports).fetch([queue], 10, 5.0)
    assert (delivery.envelope.body, delivery.envelope.headers) == (b"not json", {})


@pytest.mark.parametrize("field", ["content-type", "content-encoding"])
def test_an_envelope_with_a_non_text_field_is_delivered_raw_for_the_worker_to_reject(
    field: str, names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    queue = names("odd-field")
    document = {"body": "", "headers": {}, "properties": {}, field: 5}
    raw.lpush(queue, orjson.dumps(document))
    [delivery] = new_transport(transports).fetch([queue], 10, 5.0)
    assert delivery.envelope.headers == {}
    assert delivery.envelope.content_type == "application/data"


def test_huge_batch_round_trip(names: Names, transports: list[RedisTransport]) -> None:
    queue = names("huge")
    transport = new_transport(transports)
    transport.publish([envelope_for(queue, n) for n in range(6000)])  # more than one LPUSH
    seen = 0
    while batch := transport.fetch([queue], 1000, 0):
        seen += len(batch)
        transport.ack(batch)
    assert seen == 6000


def test_auto_delete_queues_go_with_their_transport(
    names: Names, transports: list[RedisTransport], raw: redis.Redis
) -> None:
    oid = names("oid")
    reply_queue = f"{oid}.reply.celery.pidbox"
    exchange = names("reply.celery.pidbox")
    transport = new_transport(transports)
    spec = QueueSpec(reply_queue, exchange=exchange, routing_key=oid, auto_delete=True)
    transport.declare([spec])
    reply = envelope_for(oid, 1)
    reply.exchange = exchange
    transport.publish([reply])
    assert raw.llen(reply_queue) == 1

    transport.close()

    assert not raw.exists(reply_queue)
    assert raw.smembers(f"_kombu.binding.{exchange}") == set()


def test_celeriac_events_reach_a_kombu_event_receiver(
    names: Names, transports: list[RedisTransport]
) -> None:
    exchange_name = names("events")
    with kombu.Connection(URL) as connection:
        exchange = kombu.Exchange(exchange_name, type="fanout")
        queue = kombu.Queue(names("receiver"), exchange, routing_key="worker.#", auto_delete=True)
        received: list[Any] = []
        with connection.Consumer(queue, callbacks=[lambda body, msg: received.append(body)]):
            # kombu subscribes when it first drains: this returns on the confirmation.
            connection.drain_events(timeout=5)
            producer = new_transport(transports, fanout_exchanges=[exchange_name])
            for key, number in (("worker.heartbeat", 1), ("task.succeeded", 2)):
                body = orjson.dumps({"type": key, "n": number})
                producer.publish([Envelope(body, {}, {}, exchange=exchange_name, routing_key=key)])
            deadline = time.monotonic() + 5
            while not received and time.monotonic() < deadline:
                connection.drain_events(timeout=5)
            with pytest.raises(TimeoutError):
                connection.drain_events(timeout=0.3)  # task.* is not for a worker.# binding
    assert received == [{"type": "worker.heartbeat", "n": 1}]


def test_a_transport_dropped_without_close_gives_its_messages_back(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("dropped")
    other = new_transport(transports, **FAST_HOLDERS)
    dropped = RedisTransport(URL, TransportOptions(transport_options=FAST_HOLDERS))
    dropped.publish([envelope_for(queue, 1)])
    assert len(dropped.fetch([queue], 10, 5.0)) == 1

    del dropped
    gc.collect()

    [back] = other.fetch([queue], 10, 5.0)
    assert back.redelivered


def test_headers_kombu_would_tag_keep_their_types(
    names: Names, transports: list[RedisTransport]
) -> None:
    queue = names("tagged")
    marker = uuid.uuid4()
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    envelope = envelope_for(queue, 1, marker=marker, big=2**70, when=moment)
    new_transport(transports).publish([envelope])

    with kombu.Connection(URL) as connection, connection.SimpleQueue(queue) as simple:
        message = simple.get(timeout=5)
        assert message.headers["marker"] == marker  # kombu's JSON tags and untags these
        assert message.headers["big"] == 2**70
        assert message.headers["when"] == moment
        message.ack()
