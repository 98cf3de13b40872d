"""RabbitMQ transport: wire compatibility with Celery/kombu, and what the conformance
suite cannot show (reconnects, quorum and priority queues, cancel notifications, codec).

Runs against the local broker in a virtual host of its own (created for the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import logging
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pika
import pytest

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Envelope, build_task_envelope, decode_task_body
from celeriac.transports import create_transport
from celeriac.transports.amqp import AMQPTransport, codec
from celeriac.transports.amqp.params import parse_urls
from celeriac.transports.base import TransportOptions
from celeriac.wire.queues import Delivery, QueueSpec
from tests.conformance.transport_amqp import BROKER, create_vhost, delete_vhost, rabbitmqctl

pytestmark = pytest.mark.amqp

Factory = Callable[..., AMQPTransport]
T = TypeVar("T")


@pytest.fixture(scope="session")
def vhost() -> Iterator[str]:
    name = create_vhost("unit")
    yield name
    delete_vhost(name)


@pytest.fixture
def url(vhost: str) -> str:
    return f"{BROKER}/{vhost}"


@pytest.fixture
def make(url: str) -> Iterator[Factory]:
    """AMQPTransport factory (quick retries); every transport is closed after the test."""
    created: list[AMQPTransport] = []

    def make(**transport_options: object) -> AMQPTransport:
        options = TransportOptions(
            transport_options={"interval_step": 0.1, **transport_options},
            connection_max_retries=20,
        )
        transport = AMQPTransport(url, options)
        created.append(transport)
        return transport

    yield make
    for transport in created:
        transport.close()


@pytest.fixture
def queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def numbered(queue: str, count: int, **properties: object) -> list[Envelope]:
    return [
        Envelope(f"m{n}".encode(), {"n": n}, {"delivery_mode": 2, **properties}, routing_key=queue)
        for n in range(count)
    ]


def numbers(deliveries: list[Delivery]) -> list[int]:
    return [delivery.envelope.headers["n"] for delivery in deliveries]


def fetch_all(
    transport: AMQPTransport, queue: str, count: int, within: float = 10.0
) -> list[Delivery]:
    deadline = time.monotonic() + within
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.fetch([queue], count - len(got), max(deadline - time.monotonic(), 0))
    return got


# -- codec and URLs (no broker) -------------------------------------------------------------


HEADER_VALUES = {
    "str": "naïve ✓",
    "empty": "",
    "none": None,
    "true": True,
    "false": False,
    "small": -7,
    "int32": 2**31 - 1,
    "int64": -(2**40),
    "float": 2.5,
    "list": [1, "a", None, [True], {"k": "v"}],
    "table": {"nested": {"deeper": [None, None]}, "empty": {}},
    "bytes": b"\x00\xff",
    "decimal": decimal.Decimal("12.34"),
    "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
}


def test_field_table_roundtrip_every_type() -> None:
    encoded = codec.encode_table(HEADER_VALUES)

    decoded, end = codec.decode_table(encoded, 0)

    assert end == len(encoded)
    assert decoded == HEADER_VALUES


def test_field_tables_agree_with_pika_both_ways() -> None:
    # pika is an independent AMQP implementation: what one writes, the other must read
    # (of the types pika writes: no floats, and bytes/datetimes differ in kind).
    values = {k: v for k, v in HEADER_VALUES.items() if k not in ("bytes", "when", "float")}
    pika_pieces: list[bytes] = []
    pika.data.encode_table(pika_pieces, values)

    ours_from_pika, _ = codec.decode_table(b"".join(pika_pieces), 0)
    pika_from_ours, _ = pika.data.decode_table(codec.encode_table(values), 0)

    assert ours_from_pika == values
    assert pika_from_ours == values


def test_properties_roundtrip_and_unknown_keys_are_left_out() -> None:
    properties = {
        "delivery_mode": 2,
        "priority": 5,
        "correlation_id": "id-1",
        "reply_to": "",
        "expiration": "60000",
        "message_id": "m",
        "timestamp": 1700000000,
        "type": "t",
        "app_id": "a",
        "delivery_info": {"exchange": ""},  # kombu Redis bookkeeping: not an AMQP property
    }
    flags, encoded = codec.encode_properties("application/json", "utf-8", {"a": 1}, properties)

    decoded = codec.decode_properties(encoded, 0, flags)

    expected = {key: value for key, value in properties.items() if key != "delivery_info"}
    assert decoded == ("application/json", "utf-8", {"a": 1}, expected)


@pytest.mark.parametrize(
    ("url", "host", "port", "vhost", "user", "password", "tls"),
    [
        ("amqp://guest:guest@localhost:5672//", "localhost", 5672, "/", "guest", "guest", False),
        ("amqp://u:p%40ss@h:1234/jobs", "h", 1234, "jobs", "u", "p@ss", False),
        ("pyamqp://h", "h", 5672, "/", "guest", "guest", False),
        ("amqp://h/%2Fprod", "h", 5672, "/prod", "guest", "guest", False),
        ("amqps://u@h/v", "h", 5671, "v", "u", "guest", True),
    ],
)
def test_url_parsing_follows_kombu(
    url: str, host: str, port: int, vhost: str, user: str, password: str, tls: bool
) -> None:
    [params] = parse_urls(url, TransportOptions())

    assert (params.host, params.port, params.virtual_host) == (host, port, vhost)
    assert (params.userid, params.password) == (user, password)
    assert (params.ssl_context is not None) == tls


def test_semicolon_separated_urls_are_failover_brokers() -> None:
    brokers = parse_urls("amqp://a//;amqp://b:5673//", TransportOptions(heartbeat=7))

    assert [(b.host, b.port, b.heartbeat) for b in brokers] == [("a", 5672, 7), ("b", 5673, 7)]


# -- wire compatibility with Celery/kombu --------------------------------------------------


@pytest.mark.celery
def test_message_sent_by_celery_is_fetched_and_decoded(make: Factory, url: str, queue: str) -> None:
    import celery  # type: ignore[import-untyped]

    app = celery.Celery("peer", broker=url, set_as_current=False)
    try:
        sent = app.send_task(
            "proj.add", args=(2, 3), kwargs={"z": [1, None]}, queue=queue, priority=4, expires=60
        )
    finally:
        app.close()
    transport = make()

    [delivery] = transport.fetch([queue], 10, 10.0)

    envelope = delivery.envelope
    assert (envelope.exchange, envelope.routing_key, delivery.queue) == ("", queue, queue)
    assert envelope.headers["task"] == "proj.add"
    assert envelope.headers["id"] == envelope.properties["correlation_id"] == sent.id
    assert envelope.headers["timelimit"] == [None, None]
    assert envelope.headers["argsrepr"] == "(2, 3)"
    assert envelope.properties["delivery_mode"] == 2
    assert envelope.properties["priority"] == 4
    assert envelope.properties["reply_to"]  # Celery always sends its oid
    assert 50_000 < int(envelope.properties["expiration"]) <= 60_000
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    body = decode_task_body(envelope, frozenset({"application/json"}))
    assert (body.args, body.kwargs) == ([2, 3], {"z": [1, None]})
    transport.ack([delivery])


@pytest.mark.celery
def test_envelope_published_by_celeriac_is_read_by_kombu(
    make: Factory, url: str, queue: str
) -> None:
    import kombu

    envelope = build_task_envelope(
        "proj.add", str(uuid.uuid4()), [2, 3], {"z": 1}, priority=3, expiration_ms=60000
    )
    envelope.routing_key = queue
    make().publish([envelope])

    with kombu.Connection(url) as connection:  # type: ignore[attr-defined,no-untyped-call]
        simple = connection.SimpleQueue(queue)
        message = simple.get(timeout=10)
        message.ack()
        simple.close()

    body = message.body  # py-amqp hands text bodies over decoded
    assert (body.encode(message.content_encoding) if isinstance(body, str) else body) == (
        envelope.body
    )
    assert message.headers == envelope.headers
    assert message.content_type == "application/json"
    assert message.content_encoding == "utf-8"
    assert message.delivery_info["routing_key"] == queue
    assert message.delivery_info["exchange"] == ""
    assert {key: message.properties[key] for key in envelope.properties} == {
        **envelope.properties,
        "expiration": "60000",
    }
    assert message.decode() == [[2, 3], {"z": 1}, envelope_embed()]


def envelope_embed() -> dict[str, None]:
    return {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def test_scheme_aliases_create_the_amqp_transport(vhost: str) -> None:
    for scheme in ("amqp", "pyamqp", "amqps"):
        transport = create_transport(f"{scheme}://guest:guest@127.0.0.1/{vhost}")
        assert isinstance(transport, AMQPTransport)


# -- connection loss -----------------------------------------------------------------------


def close_connections(vhost: str) -> None:
    """The broker closes every connection of the vhost (CONNECTION_FORCED, like a restart)."""
    rabbitmqctl("close_all_connections", "-p", vhost, "test: forced close")


def test_reconnects_after_the_broker_closes_the_connection(
    make: Factory, vhost: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    transport = make()
    transport.publish(numbered(queue, 10))
    held = transport.fetch([queue], 3, 10.0)
    assert numbers(held) == [0, 1, 2]

    with caplog.at_level(logging.INFO, logger="celeriac.transports.amqp"):
        close_connections(vhost)
        transport.ack(held)  # void now (the broker requeued them): must not raise
        transport.publish(numbered(queue, 12)[10:])  # reconnects, then publishes
        after = fetch_all(transport, queue, 12)
        transport.ack(after)

    assert sorted(numbers(after)) == list(range(12))
    assert {d.envelope.headers["n"] for d in after if d.redelivered} == {0, 1, 2}
    assert make().size(queue) == 0
    lost = [r for r in caplog.records if "lost the broker connection" in r.getMessage()]
    assert len(lost) == 1
    assert lost[0].exc_info is None  # one line, no traceback
    assert any("reconnected to" in r.getMessage() for r in caplog.records)


def test_unconfirmed_publish_after_a_quiet_spell_notices_a_closed_connection(
    make: Factory, vhost: str, queue: str
) -> None:
    publisher = make(confirm_publish=False)
    publisher.publish(numbered(queue, 1))
    close_connections(vhost)
    closed_at = time.monotonic()
    while time.monotonic() - closed_at < 1.0:  # "quiet" is a matter of time by definition
        time.sleep(0.05)

    publisher.publish(numbered(queue, 2)[1:])  # must not vanish into the dead socket

    assert numbers(fetch_all(make(), queue, 2)) == [0, 1]


def test_without_retry_a_failed_publish_is_left_to_the_caller(
    make: Factory, vhost: str, queue: str
) -> None:
    # How the app publishes: connection_retry=False, its own retry policy around publish.
    # With waited confirms the failure surfaces in the failing call itself.
    forwarder = Forwarder()
    url = f"amqp://guest:guest@127.0.0.1:{forwarder.port}/{vhost}"
    options = TransportOptions(connection_retry=False, transport_options={"confirm_publish": True})
    publisher = AMQPTransport(url, options)
    try:
        publisher.publish(numbered(queue, 1))
        forwarder.outage()
        with pytest.raises(OperationalError, match="connection"):
            publisher.publish(numbered(queue, 2)[1:])
        forwarder.restore()
        publisher.publish(numbered(queue, 2)[1:])  # the caller's retry
    finally:
        publisher.close()
        forwarder.close()

    consumer = make()
    assert numbers(fetch_all(consumer, queue, 2)) == [0, 1]
    assert consumer.fetch([queue], 5, 0.3) == []  # and not a second copy


def test_rides_out_an_outage_with_one_line_per_retry(
    vhost: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    forwarder = Forwarder()
    options = TransportOptions(transport_options={"interval_step": 0.1}, connection_max_retries=50)
    transport = AMQPTransport(f"amqp://guest:guest@127.0.0.1:{forwarder.port}/{vhost}", options)
    try:
        transport.publish(numbered(queue, 5))
        held = transport.fetch([queue], 2, 10.0)

        def restore_after_two_retries() -> None:
            while sum("retry" in r.getMessage() for r in caplog.records) < 2:
                time.sleep(0.01)
            forwarder.restore()

        with caplog.at_level(logging.INFO, logger="celeriac.transports.amqp"):
            forwarder.outage()
            transport.ack(held)  # the socket is gone: void, must not raise
            restorer = threading.Thread(target=restore_after_two_retries)
            restorer.start()
            back = fetch_all(transport, queue, 5)
            restorer.join(10)
            transport.ack(back)
    finally:
        transport.close()
        forwarder.close()

    assert sorted(numbers(back)) == [0, 1, 2, 3, 4]
    assert {d.envelope.headers["n"] for d in back if d.redelivered} == {0, 1}
    messages = [r.getMessage() for r in caplog.records]
    retries = [m for m in messages if "cannot connect" in m]
    assert len(retries) >= 2 and all("retry" in m for m in retries)
    ours = [r for r in caplog.records if r.name == "celeriac.transports.amqp"]
    assert all(r.exc_info is None for r in ours)  # no traceback flood
    assert forwarder.connections == 2


def test_consumers_and_declarations_come_back_after_a_reconnect(
    make: Factory, vhost: str, queue: str
) -> None:
    consumer, producer = make(), make()
    consumer.declare([QueueSpec(queue, exchange=f"{queue}-x", routing_key="k")])
    assert consumer.fetch([queue], 5, 0.05) == []  # consuming

    close_connections(vhost)
    producer.publish([Envelope(b"x", {"n": 1}, {}, exchange=f"{queue}-x", routing_key="k")])

    assert numbers(fetch_all(consumer, queue, 1)) == [1]


def test_gives_up_with_a_clear_error_after_max_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = TransportOptions(transport_options={"interval_step": 0.01}, connection_max_retries=2)
    transport = AMQPTransport("amqp://guest:guest@127.0.0.1:1//", options)

    with (
        caplog.at_level(logging.WARNING, logger="celeriac.transports.amqp"),
        pytest.raises(OperationalError, match=r"cannot connect to amqp://guest@127\.0\.0\.1:1"),
    ):
        transport.size("anything")

    retries = [r.getMessage() for r in caplog.records]
    assert len(retries) == 2
    assert "retry 1/2" in retries[0] and "retry 2/2" in retries[1]


@pytest.mark.parametrize(
    "credentials_and_vhost",
    ["guest:wrong@127.0.0.1:5672/{vhost}", "guest:guest@127.0.0.1:5672/no-such-vhost"],
)
def test_bad_login_or_vhost_fails_at_once_without_retrying(
    credentials_and_vhost: str, vhost: str
) -> None:
    transport = AMQPTransport("amqp://" + credentials_and_vhost.format(vhost=vhost))

    started = time.monotonic()
    with pytest.raises(OperationalError, match="refused the login or the virtual host"):
        transport.size("anything")
    assert time.monotonic() - started < 5.0


def test_heartbeats_keep_a_waiting_consumer_connected(
    url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    # With a 1 s heartbeat the broker drops a silent connection after ~2 s.
    transport = AMQPTransport(url, TransportOptions(heartbeat=1))
    try:
        with caplog.at_level(logging.WARNING, logger="celeriac.transports.amqp"):
            assert transport.fetch([queue], 1, 3.0) == []
            transport.publish(numbered(queue, 1))
            assert numbers(transport.fetch([queue], 1, 5.0)) == [0]
    finally:
        transport.close()
    assert not [r for r in caplog.records if "lost" in r.getMessage()]


# -- queue kinds and broker features -------------------------------------------------------


def queue_types(vhost: str) -> dict[str, str]:
    listing = rabbitmqctl("list_queues", "-p", vhost, "--no-table-headers", "-q", "name", "type")
    return dict(line.split("\t") for line in listing.splitlines() if "\t" in line)


def test_quorum_queue_declare_consume_ack_and_requeue(
    make: Factory, vhost: str, queue: str
) -> None:
    transport = make()
    transport.declare([QueueSpec(queue, arguments={"x-queue-type": "quorum"})])
    transport.publish(numbered(queue, 5))

    first = fetch_all(transport, queue, 2)
    transport.ack(first)
    rest = fetch_all(transport, queue, 3)
    transport.reject(rest[:1], requeue=True)
    transport.ack(rest[1:])
    again = fetch_all(transport, queue, 1)
    transport.ack(again)

    assert queue_types(vhost)[queue] == "quorum"
    assert numbers(first) + numbers(rest) == [0, 1, 2, 3, 4]
    assert numbers(again) == [2] and again[0].redelivered
    assert transport.size(queue) == 0


def test_priority_queue_delivers_highest_first_and_caps_at_max(make: Factory, queue: str) -> None:
    transport = make()
    transport.declare([QueueSpec(queue, max_priority=5)])
    priorities = [1, 5, 0, 9, 3]  # 9 counts as 5, the queue's maximum: FIFO with the other 5
    transport.publish(
        [
            Envelope(b"", {"n": n}, {"priority": p}, routing_key=queue)
            for n, p in enumerate(priorities)
        ]
    )

    assert numbers(fetch_all(transport, queue, 5)) == [1, 3, 4, 0, 2]


def test_per_message_expiration_is_enforced_by_the_broker(make: Factory, queue: str) -> None:
    transport = make()
    transport.publish(numbered(queue, 1, expiration="1") + numbered(queue, 2)[1:])
    transport.size(queue)  # the broker has both (confirms are pipelined)
    time.sleep(0.05)  # well past message 0's 1 ms time to live

    assert numbers(fetch_all(transport, queue, 1)) == [1]  # message 0 expired at the head
    assert transport.fetch([queue], 5, 0.2) == []


def test_consumer_cancelled_by_queue_deletion_consumes_again(
    make: Factory, url: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer, producer = make(), make()
    assert consumer.fetch([queue], 1, 0.05) == []  # the queue now exists and is consumed
    with pika.BlockingConnection(pika.URLParameters(url)) as connection:
        connection.channel().queue_delete(queue)

    with caplog.at_level(logging.WARNING, logger="celeriac.transports.amqp"):
        assert consumer.fetch([queue], 1, 0.3) == []  # notices the cancel, consumes again
        producer.publish(numbered(queue, 1))
        assert numbers(fetch_all(consumer, queue, 1)) == [0]

    messages = [r.getMessage() for r in caplog.records]
    assert any("cancelled the consumer of queue" in m for m in messages)


def test_publishing_to_a_missing_exchange_raises_and_the_transport_goes_on(
    make: Factory, queue: str
) -> None:
    transport = make(confirm_publish=True)

    with pytest.raises(OperationalError, match="404"):
        transport.publish([Envelope(b"", {}, {}, exchange=f"{queue}-nowhere", routing_key="k")])
    transport.publish(numbered(queue, 1))

    assert numbers(fetch_all(transport, queue, 1)) == [0]


def test_pipelined_confirms_report_a_missing_exchange_on_a_later_call(
    make: Factory, queue: str
) -> None:
    transport = make()  # the default: pipelined confirms

    transport.publish([Envelope(b"", {}, {}, exchange=f"{queue}-nowhere", routing_key="k")])
    with pytest.raises(OperationalError, match="404"):
        transport.size(queue)  # reading waits for this transport's pending confirms
    transport.publish(numbered(queue, 1))

    assert numbers(fetch_all(transport, queue, 1)) == [0]


def test_declare_conflicting_with_an_existing_queue_names_it(make: Factory, queue: str) -> None:
    transport = make()
    transport.declare([QueueSpec(queue, max_priority=3)])

    with pytest.raises(OperationalError, match=f"declaring queue '{queue}' failed: 406"):
        transport.declare([QueueSpec(queue, max_priority=7)])
    transport.publish(numbered(queue, 1))  # the transport is still usable

    assert transport.size(queue) == 1


def test_consuming_another_connections_exclusive_queue_fails_clearly(
    make: Factory, queue: str
) -> None:
    owner, intruder = make(), make()
    owner.declare([QueueSpec(queue, exclusive=True, durable=False)])
    owner.publish(numbered(queue, 1))

    with pytest.raises(OperationalError, match=f"queue '{queue}' failed: 405 RESOURCE_LOCKED"):
        intruder.fetch([queue], 1, 1.0)

    assert numbers(fetch_all(owner, queue, 1)) == [0]


# -- batching details ----------------------------------------------------------------------


def test_scattered_acks_and_rejects_settle_exactly_what_was_named(
    make: Factory, queue: str
) -> None:
    transport = make()
    transport.publish(numbered(queue, 12))
    held = fetch_all(transport, queue, 12)

    transport.ack(held[1::2])  # not contiguous: one frame per tag
    transport.reject(held[2:6:2], requeue=True)  # 2 and 4 come back
    transport.ack(held[8::2] + held[6:7])  # 6, 8, 10
    transport.ack(held[0:1])  # 0: everything below 2 is settled now

    back = fetch_all(transport, queue, 2)
    assert sorted(numbers(back)) == [2, 4]
    transport.ack(back)
    transport.close()
    assert make().fetch([queue], 20, 0.3) == []


def test_large_bodies_span_several_frames(make: Factory, queue: str) -> None:
    transport = make()
    body = bytes(range(256)) * 2000  # 512 KB: four frames of the 128 KB maximum
    transport.publish([Envelope(body, {"n": 0}, {}, routing_key=queue), *numbered(queue, 2)[1:]])

    deliveries = fetch_all(transport, queue, 2)

    assert [d.envelope.body for d in deliveries] == [body, b"m1"]


def test_pipelined_confirms_read_your_writes_and_publish_everything_by_close(
    make: Factory, queue: str
) -> None:
    producer = make(confirm_publish="pipelined", confirm_window=50)
    for envelope in numbered(queue, 100):
        producer.publish([envelope])
    assert producer.size(queue) == 100  # its own writes are confirmed before it looks
    for envelope in numbered(queue, 200)[100:]:
        producer.publish([envelope])
    producer.close()  # waits for the last confirms

    assert make().size(queue) == 200


def test_prefetch_window_grows_when_held_messages_are_not_acked(make: Factory, queue: str) -> None:
    transport = make()
    transport.publish(numbered(queue, 10))

    first = transport.fetch([queue], 2, 10.0)
    assert transport.size(queue) == 8  # only the window was sent
    second = fetch_all(transport, queue, 3)

    assert numbers(first) + numbers(second) == [0, 1, 2, 3, 4]
    assert transport.size(queue) == 5


# -- TLS -------------------------------------------------------------------------------------


class Forwarder:
    """A local port whose connections are forwarded to the broker's AMQP port.

    With a server ``SSLContext`` it terminates TLS, standing in for a RabbitMQ TLS listener
    (the local broker has none). ``outage()`` drops every connection and refuses new ones
    until ``restore()``: the broker seen from the client going away and coming back,
    without disturbing anybody else's use of the shared broker.
    """

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.server = self._call(self._listen())
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if not self.loop.is_running():
            return self.loop.run_until_complete(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._forward, "127.0.0.1", self.port, ssl=self.context)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
        finally:
            for stream in (writer, up_writer):
                stream.close()
                self._writers.discard(stream)
            self._tasks.discard(task)

    async def _stop(self) -> None:
        self.server.close()
        for writer in list(self._writers):  # both ends see the connection drop
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    def outage(self) -> None:
        self._call(self._stop())

    def restore(self) -> None:
        self.server = self._call(self._listen())

    def close(self) -> None:
        self._call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.write_eof() if writer.can_write_eof() else writer.close()


@pytest.fixture
def tls_terminator(tmp_path: Path) -> Iterator[tuple[Forwarder, Path]]:
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1",
         "-keyout", str(keyfile), "-out", str(certfile), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    terminator = Forwarder(context)
    yield terminator, certfile
    terminator.close()


def test_amqps_connects_over_tls_and_verifies_the_certificate(
    tls_terminator: tuple[Forwarder, Path], vhost: str, queue: str
) -> None:
    terminator, certfile = tls_terminator
    url = f"amqps://guest:guest@localhost:{terminator.port}/{vhost}"
    trusted = AMQPTransport(
        url, TransportOptions(transport_options={"ssl": {"ca_certs": certfile}})
    )
    untrusted = AMQPTransport(url, TransportOptions(connection_max_retries=0))
    try:
        trusted.publish(numbered(queue, 2))
        assert numbers(fetch_all(trusted, queue, 2)) == [0, 1]
        with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
            untrusted.size(queue)
    finally:
        trusted.close()
        untrusted.close()
    assert terminator.connections >= 1
