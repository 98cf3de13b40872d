"""Dispatcher → broker → receiver, on every broker: the wire format, batches, bad messages."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import orjson
import pytest

from celeriac import Celery
from celeriac.events import EventSettings, standard
from celeriac.events.exchange import receiver_queue
from celeriac.protocol.message import Envelope
from celeriac.transports.base import Transport
from celeriac.wire.queues import Delivery
from tests.events.conftest import Broker

TIMEOUT = 10.0


def fetch_raw(transport: Transport, queue: str, count: int) -> list[Delivery]:
    """``count`` messages from ``queue``, as they came (acked)."""
    deliveries: list[Delivery] = []
    deadline = time.monotonic() + TIMEOUT
    while len(deliveries) < count and time.monotonic() < deadline:
        deliveries += transport.fetch([queue], count - len(deliveries), 0.5)
    transport.ack(deliveries)
    assert len(deliveries) == count, f"{len(deliveries)} of {count} messages came"
    return deliveries


def raw_queue(broker: Broker) -> tuple[Transport, str]:
    """A queue bound to the event exchange as a receiver's is, read without a receiver."""
    transport = broker.transport()
    queue = receiver_queue(EventSettings(), transport, f"raw-{uuid.uuid4().hex}")
    broker.receiver()  # declares the exchange where the broker wants that first
    transport.declare([queue])
    return transport, queue.name


class CountingTransport:
    """A transport that counts its ``publish`` calls."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.url = transport.url
        self.capabilities = transport.capabilities
        self.publishes: list[int] = []

    def declare(self, queues: Sequence[object]) -> None:
        self.transport.declare(queues)  # type: ignore[arg-type]

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        self.publishes.append(len(envelopes))
        self.transport.publish(envelopes)

    def close(self) -> None:
        self.transport.close()


def test_an_event_travels_in_celerys_format(broker: Broker) -> None:
    transport, queue = raw_queue(broker)
    with broker.dispatcher("w1@example") as dispatcher:
        dispatcher.dispatch(standard.worker_online(freq=2.0, active=0, processed=5))

    (delivery,) = fetch_raw(transport, queue, 1)
    envelope = delivery.envelope
    assert envelope.routing_key == "worker.online"
    assert envelope.exchange == "celeryev"
    assert envelope.headers == {"hostname": "w1@example"}
    assert envelope.properties["delivery_mode"] == 1
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    event = orjson.loads(envelope.body)
    assert event["type"] == "worker-online"
    assert event["hostname"] == "w1@example"
    assert {"timestamp", "utcoffset", "pid", "clock"} <= event.keys()
    assert (event["freq"], event["active"], event["processed"]) == (2.0, 0, 5)
    assert len(event["loadavg"]) == 3


def test_buffered_events_go_out_as_one_multi_array_per_group(broker: Broker) -> None:
    transport, queue = raw_queue(broker)
    counting = CountingTransport(broker.transport())
    dispatcher = broker.dispatcher(buffer_group=["task", "custom"], buffer_limit=100)
    dispatcher.transport = counting  # type: ignore[assignment]
    for index in range(3):
        dispatcher.dispatch(standard.task_started(f"t{index}"))
    dispatcher.send("custom-thing", value=1)
    assert counting.publishes == []  # buffered until the flush
    dispatcher.flush()
    assert counting.publishes == [2]  # one publish: one message per group

    deliveries = fetch_raw(transport, queue, 2)
    by_key = {d.envelope.routing_key: orjson.loads(d.envelope.body) for d in deliveries}
    assert set(by_key) == {"task.multi", "custom.multi"}
    assert [event["uuid"] for event in by_key["task.multi"]] == ["t0", "t1", "t2"]
    clocks = [event["clock"] for event in by_key["task.multi"]]
    assert clocks == sorted(clocks) and len(set(clocks)) == 3
    assert by_key["custom.multi"][0]["value"] == 1


def test_a_full_buffer_flushes_itself(broker: Broker) -> None:
    transport, queue = raw_queue(broker)
    dispatcher = broker.dispatcher(buffer_group=["task"], buffer_limit=2)
    dispatcher.dispatch(standard.task_started("a"))
    dispatcher.dispatch(standard.task_started("b"))
    dispatcher.dispatch(standard.worker_heartbeat(freq=2.0, active=1, processed=0))
    deliveries = fetch_raw(transport, queue, 2)
    keys = sorted(d.envelope.routing_key for d in deliveries)
    assert keys == ["task.multi", "worker.heartbeat"]


def test_the_receiver_hands_events_and_arrays_to_handlers(broker: Broker) -> None:
    received: list[dict[str, object]] = []
    failed: list[dict[str, object]] = []
    receiver = broker.receiver({"task-failed": failed.append, "*": received.append})
    dispatcher = broker.dispatcher(buffer_group=["task"])
    dispatcher.dispatch(standard.worker_online(freq=2.0, active=0, processed=0))
    dispatcher.dispatch(standard.task_received("t1", "add", args="(1, 2)", kwargs="{}"))
    dispatcher.dispatch(standard.task_started("t1"))
    dispatcher.dispatch(standard.task_failed("t1", ValueError("boom"), "Traceback..."))
    dispatcher.close()

    receiver.capture(limit=4, timeout=TIMEOUT)
    assert [event["type"] for event in received] == [
        "worker-online",
        "task-received",
        "task-started",
    ]
    assert failed[0]["exception"] == "ValueError('boom')"
    for event in [*received, *failed]:
        assert event["hostname"] == "w1@events-test"
        assert isinstance(event["local_received"], float)
    assert received[1]["args"] == "(1, 2)"


def test_bad_messages_are_dropped_with_one_log_line_each(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[dict[str, object]] = []
    receiver = broker.receiver({"*": received.append})
    bad = [
        (b"not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"no": "type"}', "application/json"),
        (b'"a string"', "application/json"),
        (b"\x80\x04K\x01.", "application/x-python-serialize"),
    ]
    transport = broker.transport()
    transport.publish(
        [
            Envelope(
                body,
                {"hostname": "bad@host"},
                {"delivery_mode": 1},
                content_type,
                "binary",
                exchange="celeryev",
                routing_key="task.sent",
            )
            for body, content_type in bad
        ]
    )
    broker.dispatcher().dispatch(standard.task_started("good"))

    with caplog.at_level(logging.WARNING, logger="celeriac.events"):
        receiver.capture(limit=1, timeout=TIMEOUT)
        receiver.capture(timeout=0.3)  # nothing else comes

    assert [event["uuid"] for event in received] == ["good"]
    dropped = [r for r in caplog.records if r.name == "celeriac.events"]
    assert len(dropped) == len(bad)
    assert all("bad@host" in record.getMessage() for record in dropped)


def test_events_sent_before_any_receiver_are_dropped_and_sending_goes_on(broker: Broker) -> None:
    # On RabbitMQ a publish to a missing exchange would close the channel: the dispatcher
    # declares the exchange first (durable, as Celery's peers expect it).
    dispatcher = broker.dispatcher()
    dispatcher.dispatch(standard.task_started("early-1"))
    dispatcher.dispatch(standard.task_started("early-2"))
    received: list[dict[str, object]] = []
    receiver = broker.receiver({"*": received.append})
    dispatcher.dispatch(standard.task_started("late"))
    receiver.capture(limit=1, timeout=TIMEOUT)
    receiver.capture(timeout=0.3)
    assert [event["uuid"] for event in received] == ["late"]


def test_capture_ends_at_its_timeout(broker: Broker) -> None:
    receiver = broker.receiver({"*": pytest.fail})
    started = time.monotonic()
    receiver.capture(timeout=0.5)
    assert 0.4 < time.monotonic() - started < 3.0


def test_itercapture_ends_soon_after_should_stop(broker: Broker) -> None:
    receiver = broker.receiver()
    dispatcher = broker.dispatcher()
    for index in range(3):
        dispatcher.dispatch(standard.task_started(f"t{index}"))
    seen = []
    for event in receiver.itercapture(timeout=TIMEOUT):
        seen.append(event["uuid"])
        receiver.should_stop = True
    assert seen == ["t0"]
    receiver.should_stop = False
    assert [event["uuid"] for event in receiver.itercapture(limit=2, timeout=TIMEOUT)] == [
        "t1",
        "t2",
    ]


def test_a_disabled_dispatcher_and_other_groups_send_nothing(broker: Broker) -> None:
    received: list[dict[str, object]] = []
    receiver = broker.receiver({"*": received.append})
    dispatcher = broker.dispatcher(enabled=False, groups=["worker"])
    dispatcher.dispatch(standard.worker_online(freq=2.0, active=0, processed=0))
    dispatcher.enabled = True
    dispatcher.dispatch(standard.task_started("not sent: not a worker event"))
    dispatcher.dispatch(standard.worker_offline(freq=2.0, active=0, processed=0))
    receiver.capture(limit=2, timeout=1.0)
    assert [event["type"] for event in received] == ["worker-offline"]


def test_app_events_use_the_apps_settings(broker: Broker) -> None:
    app = Celery("events", broker=broker.url, event_exchange="ev.custom")
    state = app.events.State()
    receiver = app.events.Receiver({"*": state.event})
    receiver.declare()
    with app.events.Dispatcher("w9@example") as dispatcher:
        dispatcher.dispatch(standard.worker_heartbeat(freq=2.0, active=0, processed=0))
        dispatcher.dispatch(standard.task_received("t1", "add", args="()", kwargs="{}"))
    try:
        receiver.capture(limit=2, timeout=TIMEOUT)
    finally:
        receiver.close()
    assert receiver.queue.exchange == "ev.custom"
    assert receiver.queue.name.startswith("celeryev.")
    assert [worker.hostname for worker in state.alive_workers()] == ["w9@example"]
    assert state.tasks["t1"].state == "RECEIVED"
