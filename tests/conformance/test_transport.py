"""The transport contract (celeriac/transports/base.py), checked on every implementation.

Each test runs once per ``transport_*.py`` module beside this file (see ``conftest.py``).
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from celeriac.protocol.message import Envelope
from celeriac.transports.base import DEAD_REASON_HEADER, Transport, dead_letter_queue
from celeriac.wire.queues import Delivery, QueueSpec

from .conftest import Names, TransportFactory

# -- helpers ------------------------------------------------------------------------------


def message(queue: str, number: int, priority: int = 0, **envelope: Any) -> Envelope:
    """A small message that says which one it is in its ``n`` header."""
    return Envelope(
        body=f"body-{number}".encode(),
        headers={"n": number},
        properties={"priority": priority, "delivery_mode": 2},
        routing_key=queue,
        **envelope,
    )


def numbers(deliveries: Sequence[Delivery]) -> list[int]:
    return [delivery.envelope.headers["n"] for delivery in deliveries]


def fetch_until(
    transport: Transport, queues: Sequence[str], count: int, within: float, limit: int = 100
) -> list[Delivery]:
    """Fetch until ``count`` messages arrived or ``within`` seconds passed.

    One fetch returns what has arrived (at least one message): a push broker may deliver a
    batch over more than one read.
    """
    deadline = time.monotonic() + within
    deliveries: list[Delivery] = []
    while len(deliveries) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        deliveries += transport.fetch(queues, min(limit, count - len(deliveries)), remaining)
    return deliveries


def drain_and_ack(transport: Transport, queue: str, batch: int) -> list[int]:
    """Fetch and ack until a fetch comes back empty; the numbers seen, in order."""
    seen: list[int] = []
    while deliveries := transport.fetch([queue], batch, 0.2):
        seen += numbers(deliveries)
        transport.ack(deliveries)
    return seen


class Channel:
    """JSON lines over a pair of pipes, between a test and a forked child."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = os.fdopen(read_fd, "r")
        self._writer = os.fdopen(write_fd, "w")

    def send(self, value: Any) -> None:
        self._writer.write(json.dumps(value) + "\n")
        self._writer.flush()

    def receive(self) -> Any:
        line = self._reader.readline()
        if not line:
            raise EOFError("the other process closed the channel (did it fail?)")
        return json.loads(line)

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class Child:
    """A forked process running ``work(channel)``; it never returns into pytest."""

    def __init__(self, work: Callable[[Channel], None]) -> None:
        parent_read, child_write = os.pipe()
        child_read, parent_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - runs in the child
            exit_code = 1
            try:
                os.close(parent_read)
                os.close(parent_write)
                work(Channel(child_read, child_write))
                exit_code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(exit_code)  # no pytest teardown, no close(): a dead holder
        os.close(child_read)
        os.close(child_write)
        self.channel = Channel(parent_read, parent_write)

    def join(self) -> int:
        """Wait for the child to end; its exit code."""
        self.channel.close()
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status)


# -- publish and fetch --------------------------------------------------------------------


def test_roundtrip_preserves_the_envelope(transport: Transport, names: Names) -> None:
    queue = names("roundtrip")
    body = bytes(range(256)) + b"\x00\xff\x00"
    headers = {
        "task": "proj.tasks.add",
        "id": "6a0f9b7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "nested": {"list": [1, 2.5, None, True, False, "x"], "deeper": {"empty": {}}},
        "none": None,
        "yes": True,
        "no": False,
        "unicode": "naïve café ✓ 日本語 🚀",
        "timelimit": [None, 30],
        "retries": 3,
    }
    properties = {
        "correlation_id": "6a0f9b7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "reply_to": "reply-queue",
        "delivery_mode": 2,
        "priority": 0,
    }
    transport.publish(
        [
            Envelope(
                body,
                headers,
                properties,
                content_type="application/x-msgpack",
                content_encoding="binary",
                routing_key=queue,
            )
        ]
    )

    [delivery] = transport.fetch([queue], 10, 5.0)

    received = delivery.envelope
    assert received.body == body
    assert {key: received.headers.get(key) for key in headers} == headers
    assert {key: received.properties.get(key) for key in properties} == properties
    assert (received.content_type, received.content_encoding) == ("application/x-msgpack", "binary")
    assert received.routing_key == queue
    assert delivery.queue == queue
    assert delivery.redelivered is False


def test_fifo_across_batches_and_single_publishes(transport: Transport, names: Names) -> None:
    queue = names("fifo")
    transport.publish([message(queue, number) for number in range(20)])
    for number in range(20, 25):
        transport.publish([message(queue, number)])

    deliveries = fetch_until(transport, [queue], 25, within=5.0, limit=10)

    assert numbers(deliveries) == list(range(25))


@pytest.mark.requires_capability("priorities")
def test_higher_priority_first_then_fifo(transport: Transport, names: Names) -> None:
    queue = names("priorities")
    transport.declare([QueueSpec(queue, max_priority=9)])
    priorities = [0, 3, 9, 6, 3, 0, 9, 6]
    transport.publish([message(queue, n, priority) for n, priority in enumerate(priorities)])

    deliveries = fetch_until(transport, [queue], len(priorities), within=5.0)

    assert numbers(deliveries) == [2, 6, 3, 7, 1, 4, 0, 5]


def test_fetch_returns_at_most_limit_in_order(transport: Transport, names: Names) -> None:
    queue = names("limit")
    transport.publish([message(queue, number) for number in range(10)])

    first = fetch_until(transport, [queue], 4, within=5.0)

    assert numbers(first) == [0, 1, 2, 3]
    assert transport.size(queue) == 6


def test_fetch_from_several_queues(transport: Transport, names: Names) -> None:
    first, second = names("first"), names("second")
    transport.publish([message(first, 1), message(second, 2)])

    deliveries = fetch_until(transport, [first, second], 2, within=5.0)

    assert sorted((d.queue, n) for d, n in zip(deliveries, numbers(deliveries), strict=True)) == [
        (first, 1),
        (second, 2),
    ]


def test_fetch_timeout_returns_empty_within_bounds(transport: Transport, names: Names) -> None:
    queue = names("empty")
    transport.publish([])  # an empty batch is allowed and publishes nothing

    started = time.monotonic()
    assert transport.fetch([queue], 10, 0.3) == []
    waited = time.monotonic() - started
    started = time.monotonic()
    assert transport.fetch([queue], 10, 0) == []
    no_wait = time.monotonic() - started

    assert 0.25 <= waited < 2.0
    assert no_wait < 0.5


def test_blocked_fetch_wakes_up_on_publish(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("wake")
    producer, consumer = transport_factory(), transport_factory()
    consumer.fetch([queue], 1, 0)  # connected and registered before the clock starts
    received: list[Delivery] = []
    waiter = threading.Thread(target=lambda: received.extend(consumer.fetch([queue], 1, 20.0)))
    started = time.monotonic()
    waiter.start()

    producer.publish([message(queue, 7)])
    waiter.join(20.0)

    assert numbers(received) == [7]
    assert time.monotonic() - started < 5.0


def test_many_messages_in_one_batch(transport: Transport, names: Names) -> None:
    queue = names("bulk")
    transport.publish([message(queue, number) for number in range(2000)])

    assert transport.size(queue) == 2000
    assert drain_and_ack(transport, queue, 500) == list(range(2000))
    assert transport.size(queue) == 0


# -- ack, reject, size, purge -------------------------------------------------------------


def test_ack_removes_for_good(transport_factory: TransportFactory, names: Names) -> None:
    queue = names("ack")
    consumer = transport_factory()
    consumer.publish([message(queue, 1)])
    deliveries = consumer.fetch([queue], 10, 5.0)

    consumer.ack(deliveries)
    consumer.close()

    assert transport_factory().fetch([queue], 10, 0.2) == []


def test_fetch_acks_what_it_is_given_first(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("fetch-ack")
    consumer = transport_factory()
    consumer.publish([message(queue, number) for number in range(4)])
    first = fetch_until(consumer, [queue], 2, within=5.0)

    second = consumer.fetch([queue], 2, 5.0, ack=first)
    third = consumer.fetch([queue], 2, 0.2, ack=second)  # nothing left: still acks
    consumer.close()  # only unacked messages would come back now

    assert numbers(first + second) == [0, 1, 2, 3]
    assert third == []
    assert transport_factory().fetch([queue], 10, 0.2) == []


def test_reject_with_requeue_redelivers(transport: Transport, names: Names) -> None:
    queue = names("requeue")
    transport.publish([message(queue, 1)])
    [first] = transport.fetch([queue], 10, 5.0)

    transport.reject([first], requeue=True)
    [again] = transport.fetch([queue], 10, 5.0)

    assert numbers([again]) == [1]
    assert (first.redelivered, again.redelivered) == (False, True)
    assert again.envelope.body == first.envelope.body


def test_reject_without_requeue_drops(transport_factory: TransportFactory, names: Names) -> None:
    queue = names("drop")
    consumer = transport_factory()
    consumer.publish([message(queue, 1)])
    deliveries = consumer.fetch([queue], 10, 5.0)

    consumer.reject(deliveries, requeue=False)
    consumer.close()

    assert transport_factory().fetch([queue], 10, 0.2) == []


def test_dead_letter_moves_the_message_with_its_reason(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("dead")
    consumer = transport_factory()
    consumer.publish([message(queue, 1), message(queue, 2)])
    bad, _unsettled = fetch_until(consumer, [queue], 2, within=5.0)

    consumer.dead_letter([(bad, "InvalidMessageError: no good")])
    consumer.close()  # the other one comes back; the dead-lettered one does not

    other = transport_factory()
    assert numbers(fetch_until(other, [queue], 1, within=5.0)) == [2]
    [dead] = other.fetch([dead_letter_queue(queue)], 10, 5.0)
    assert dead.envelope.body == bad.envelope.body
    assert dead.envelope.headers[DEAD_REASON_HEADER] == "InvalidMessageError: no good"
    assert dead.envelope.headers["n"] == 1


def test_ack_and_reject_are_idempotent(transport: Transport, names: Names) -> None:
    queue = names("idempotent")
    transport.publish([message(queue, number) for number in range(3)])
    acked, rejected, kept = fetch_until(transport, [queue], 3, within=5.0)

    transport.ack([acked])
    transport.ack([acked])
    transport.reject([acked], requeue=True)
    transport.reject([rejected], requeue=False)
    transport.reject([rejected], requeue=False)
    transport.ack([rejected])

    assert transport.size(queue) == 0  # nothing came back
    transport.reject([kept], requeue=True)
    transport.reject([kept], requeue=True)
    assert numbers(transport.fetch([queue], 10, 5.0)) == [2]
    assert transport.fetch([queue], 10, 0.2) == []


def test_size_counts_ready_messages_and_purge_drops_them(
    transport: Transport, names: Names
) -> None:
    queue = names("purge")
    assert transport.size(queue) == 0
    transport.publish([message(queue, number) for number in range(5)])
    reserved = fetch_until(transport, [queue], 2, within=5.0)
    assert len(reserved) == 2

    assert transport.size(queue) == 3
    assert transport.purge(queue) == 3
    assert transport.size(queue) == 0
    assert transport.purge(queue) == 0

    transport.ack(reserved)  # reserved messages survive a purge and can still be settled
    assert transport.fetch([queue], 10, 0.2) == []


# -- exchanges and routing ----------------------------------------------------------------


def test_default_exchange_routes_to_the_queue_named_by_the_key(
    transport: Transport, names: Names
) -> None:
    queue, other = names("default"), names("other")
    transport.declare([QueueSpec(queue), QueueSpec(other)])

    transport.publish([message(queue, 1, exchange="")])

    assert numbers(transport.fetch([queue], 10, 5.0)) == [1]
    assert transport.size(other) == 0


def test_direct_exchange_routes_by_equal_key(transport: Transport, names: Names) -> None:
    exchange, images, videos = names("media"), names("images"), names("videos")
    transport.declare(
        [
            QueueSpec(images, exchange=exchange, exchange_type="direct", routing_key="image"),
            QueueSpec(videos, exchange=exchange, exchange_type="direct", routing_key="video"),
        ]
    )

    transport.publish(
        [
            message("image", 1, exchange=exchange),
            message("video", 2, exchange=exchange),
            message("image", 3, exchange=exchange),
        ]
    )

    assert numbers(fetch_until(transport, [images], 2, within=5.0)) == [1, 3]
    assert numbers(fetch_until(transport, [videos], 1, within=5.0)) == [2]


def test_topic_exchange_matches_words(transport: Transport, names: Names) -> None:
    exchange, errors, logs = names("topic"), names("errors"), names("logs")
    transport.declare(
        [
            QueueSpec(errors, exchange=exchange, exchange_type="topic", routing_key="*.error"),
            QueueSpec(logs, exchange=exchange, exchange_type="topic", routing_key="logs.#"),
        ]
    )

    transport.publish(
        [
            message("app.error", 1, exchange=exchange),
            message("logs.app.info", 2, exchange=exchange),
            message("logs.error", 3, exchange=exchange),
            message("app.db.error", 4, exchange=exchange),  # '*' is exactly one word
        ]
    )

    assert numbers(fetch_until(transport, [errors], 2, within=5.0)) == [1, 3]
    assert numbers(fetch_until(transport, [logs], 2, within=5.0)) == [2, 3]
    assert transport.fetch([errors, logs], 10, 0.2) == []


@pytest.mark.requires_capability("fanout")
def test_fanout_exchange_reaches_every_bound_queue(
    transport_factory: TransportFactory, names: Names
) -> None:
    exchange, first, second = names("broadcast"), names("first"), names("second")
    producer, listener = transport_factory(), transport_factory()
    listener.declare(
        [
            QueueSpec(first, exchange=exchange, exchange_type="fanout"),
            QueueSpec(second, exchange=exchange, exchange_type="fanout"),
        ]
    )

    producer.publish([message("ignored-key", 1, exchange=exchange)])

    assert numbers(fetch_until(listener, [first], 1, within=5.0)) == [1]
    assert numbers(fetch_until(listener, [second], 1, within=5.0)) == [1]


# -- at-least-once: holders closing, dying, and living long --------------------------------


def test_unacked_messages_come_back_when_the_holder_closes(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("closed-holder")
    holder, other = transport_factory(), transport_factory()
    holder.publish([message(queue, number) for number in range(3)])
    held = fetch_until(holder, [queue], 3, within=5.0)
    assert len(held) == 3

    holder.close()

    back = fetch_until(other, [queue], 3, within=transport_factory.dead_holder_seconds)
    assert sorted(numbers(back)) == [0, 1, 2]
    assert all(delivery.redelivered for delivery in back)


@pytest.mark.requires_capability("cross_process")
def test_unacked_messages_come_back_when_the_holder_process_dies(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("dead-holder")
    consumer = transport_factory()
    consumer.publish([message(queue, number) for number in range(5)])

    def hold_three_and_die(channel: Channel) -> None:
        doomed = transport_factory()
        channel.send(numbers(doomed.fetch([queue], 3, 5.0)))
        # returning ends the process with os._exit: no ack, no close

    child = Child(hold_three_and_die)
    held = child.channel.receive()
    assert child.join() == 0
    assert held == [0, 1, 2]

    back = fetch_until(consumer, [queue], 5, within=transport_factory.dead_holder_seconds)

    assert sorted(numbers(back)) == [0, 1, 2, 3, 4]
    assert {d.envelope.headers["n"] for d in back if d.redelivered} == {0, 1, 2}


def test_live_holder_keeps_its_messages_however_long(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("long-hold")
    holder, other = transport_factory(), transport_factory()
    holder.publish([message(queue, number) for number in range(3)])
    held = fetch_until(holder, [queue], 3, within=5.0)
    assert len(held) == 3

    # Longer than any interval at which the transport looks for dead holders.
    assert other.fetch([queue], 10, transport_factory.hold_seconds) == []

    holder.ack(held)
    assert other.fetch([queue], 10, 0.2) == []


@pytest.mark.requires_capability("cross_process")
def test_live_holder_process_keeps_its_messages_however_long(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("long-hold-process")
    consumer = transport_factory()
    consumer.publish([message(queue, number) for number in range(3)])

    def hold_until_told(channel: Channel) -> None:
        holder = transport_factory()
        held = fetch_until(holder, [queue], 3, within=5.0)
        channel.send(numbers(held))
        channel.receive()  # the test is done looking
        holder.ack(held)
        holder.close()

    child = Child(hold_until_told)
    assert child.channel.receive() == [0, 1, 2]

    assert consumer.fetch([queue], 10, transport_factory.hold_seconds) == []

    child.channel.send("ack now")
    assert child.join() == 0
    assert consumer.fetch([queue], 10, 0.2) == []


# -- competing consumers ------------------------------------------------------------------


def test_consumer_threads_never_share_a_message(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("competing-threads")
    transport_factory().publish([message(queue, number) for number in range(300)])
    seen: list[list[int]] = [[], []]

    def drain(transport: Transport, into: list[int]) -> None:
        into.extend(drain_and_ack(transport, queue, 7))

    threads = [
        threading.Thread(target=drain, args=(transport_factory(), seen[index]))
        for index in range(2)
    ]

    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)

    assert sorted(seen[0] + seen[1]) == list(range(300))


@pytest.mark.requires_capability("cross_process")
def test_consumer_processes_never_share_a_message(
    transport_factory: TransportFactory, names: Names
) -> None:
    queue = names("competing-processes")
    transport_factory().publish([message(queue, number) for number in range(400)])

    def drain(channel: Channel) -> None:
        consumer = transport_factory()
        first = fetch_until(consumer, [queue], 7, within=5.0)
        consumer.ack(first)
        channel.send("took a first batch")
        channel.receive()  # both have: now race for the rest
        channel.send(numbers(first) + drain_and_ack(consumer, queue, 7))
        consumer.close()

    children = [Child(drain), Child(drain)]
    assert [child.channel.receive() for child in children] == ["took a first batch"] * 2
    for child in children:
        child.channel.send("go")
    seen = [child.channel.receive() for child in children]

    assert [child.join() for child in children] == [0, 0]
    assert sorted(seen[0] + seen[1]) == list(range(400))
