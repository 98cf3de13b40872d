"""The consume channel: consumers, their prefetch windows (QoS), and the deliveries they bring.

Prefetch: the window starts at ``max(prefetch_count option, limit)``; when the caller
holds unacked messages and asks for more than the window lets through, it grows (see
:meth:`ConsumeChannel.consume`). Consuming several queues gives each its own window
(per-consumer QoS).

Deliveries are handed out in the order they arrived and are *outstanding* until settled:
acks and rejects settle a run of contiguous delivery tags with one ``multiple`` frame.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from pika import spec

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Envelope
from celeriac.transports.amqp import codec
from celeriac.transports.amqp.admin import AdminChannel
from celeriac.transports.amqp.codec import Content, Deliver
from celeriac.transports.amqp.connection import AMQPConnection, ChannelError
from celeriac.wire.queues import Delivery

logger = logging.getLogger("celeriac.transports.amqp")

#: Tags of deliveries: (connection epoch, AMQP delivery tag). The epoch makes deliveries
#: from a lost connection recognisable, so settling them is skipped instead of failing.
DeliveryTag = tuple[int, int]


def _tag_of(delivery: Delivery) -> DeliveryTag:
    return cast(DeliveryTag, delivery.tag)


class ConsumeChannel:
    """Consumes the queues a caller fetches from; buffers and settles their deliveries."""

    def __init__(self, admin: AdminChannel, prefetch_option: int) -> None:
        self.channel = 0
        #: Counts the connections lost: deliveries of an older epoch are void.
        self.epoch = 0
        #: Called when the deliveries handed out become void (``Transport.on_void``).
        self.void_callbacks: list[Callable[[], None]] = []
        #: Deliveries whose properties did not decode, with why: for the transport to
        #: dead-letter.
        self.unreadable: list[tuple[Delivery, str]] = []
        self._admin = admin
        self._prefetch_option = prefetch_option
        self._consumers: dict[str, list[str]] = {}  # queue → consumer tags
        self._consumer_queues: dict[str, str] = {}  # consumer tag → queue
        self._wanted_queues: tuple[str, ...] = ()
        self._cancelled_by_broker: set[str] = set()
        self._buffer: deque[Delivery] = deque()
        self._outstanding: set[int] = set()  # returned by fetch, not yet settled
        self._prefetch = 0
        self._qos_sent = 0
        self._last_limit = 1
        self._consumer_seq = 0

    def open(self, conn: AMQPConnection) -> None:
        self.channel = conn.open_channel()

    def is_consuming(self, queue: str) -> bool:
        return queue in self._consumers

    def consume_again(self, conn: AMQPConnection) -> None:
        """On a new connection: consume what the lost one consumed."""
        if self._wanted_queues:
            self.consume(conn, self._wanted_queues, self._last_limit)

    def forget_connection(self) -> None:
        """The connection is gone, and with it consumers and deliveries (the broker
        requeues those)."""
        self.epoch += 1
        for callback in self.void_callbacks:
            callback()
        self._consumers.clear()
        self._consumer_queues.clear()
        self._cancelled_by_broker.clear()
        self._buffer.clear()
        self._outstanding.clear()
        self._prefetch = 0
        self._qos_sent = 0

    def stop(self) -> None:
        """Consume nothing on the next connection."""
        self._wanted_queues = ()

    # -- fetching --------------------------------------------------------------------------

    def fetch(
        self, conn: AMQPConnection, queues: tuple[str, ...], limit: int, deadline: float
    ) -> list[Delivery]:
        self.consume(conn, queues, limit)
        buffer = self._buffer
        if len(buffer) < limit:
            conn.pump(0)  # take what has already arrived, without waiting
        while not buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            conn.pump(remaining)
            if self._cancelled_by_broker:
                self.consume(conn, queues, limit)
        count = min(limit, len(buffer))
        taken = [buffer.popleft() for _ in range(count)]
        self._outstanding.update([_tag_of(delivery)[1] for delivery in taken])
        return taken

    def consume(self, conn: AMQPConnection, queues: tuple[str, ...], limit: int) -> None:
        """Consume exactly ``queues``, with a prefetch window that lets ``limit`` more in.

        QoS is per consumer (quorum queues refuse channel-wide QoS), and a new window only
        applies to consumers created after it. So the window grows by adding a consumer
        for the difference, never by re-creating one: both consumers are fed in queue
        order by the same queue process over the same channel, so FIFO holds, and nothing
        is handed back and forth.
        """
        self._last_limit = limit
        if queues != self._wanted_queues:
            for queue in [queue for queue in self._consumers if queue not in queues]:
                self.cancel(conn, queue)
            self._wanted_queues = queues
        if not self._consumers:
            self._prefetch = 0
        need = max(self._prefetch_option, len(self._outstanding) + limit, 1)
        window = max(need, self._prefetch)
        if self._prefetch and need > self._prefetch:
            window = self._grow_window(conn, need)
        starting = [queue for queue in queues if queue not in self._consumers]
        if starting:
            self._set_qos(conn, window)
            for queue in starting:
                self._start_consumer(conn, queue)
        self._prefetch = window
        self._cancelled_by_broker.clear()

    def _grow_window(self, conn: AMQPConnection, need: int) -> int:
        """Add a consumer to each queue for the difference; return the new window."""
        window = max(need, self._prefetch * 3 // 2)  # geometric: few extra consumers
        self._set_qos(conn, window - self._prefetch)
        for queue in list(self._consumers):
            self._start_consumer(conn, queue)
        return window

    def _set_qos(self, conn: AMQPConnection, prefetch_count: int) -> None:
        if prefetch_count != self._qos_sent:
            method = spec.Basic.Qos(prefetch_count=min(prefetch_count, 65535))
            conn.rpc(self.channel, method, spec.Basic.QosOk)
            self._qos_sent = prefetch_count

    def _start_consumer(self, conn: AMQPConnection, queue: str) -> None:
        if queue in self._cancelled_by_broker:
            logger.warning("consuming queue %r again (declared anew)", queue)
        self._admin.ensure(conn, queue)
        self._consumer_seq += 1
        consumer_tag = f"celeriac.{os.getpid()}.{self._consumer_seq}"
        self._consumer_queues[consumer_tag] = queue
        self._consumers.setdefault(queue, []).append(consumer_tag)
        try:
            conn.rpc(
                self.channel,
                spec.Basic.Consume(queue=queue, consumer_tag=consumer_tag),
                spec.Basic.ConsumeOk,
            )
        except ChannelError as exc:  # e.g. 405: another connection's exclusive queue
            raise OperationalError(f"consuming queue {queue!r} failed: {exc}") from exc

    def cancel(self, conn: AMQPConnection, queue: str) -> None:
        """Stop consuming ``queue``; what was prefetched and not handed out goes back."""
        for consumer_tag in self._consumers.pop(queue):
            conn.rpc(self.channel, spec.Basic.Cancel(consumer_tag), spec.Basic.CancelOk)
            self._consumer_queues.pop(consumer_tag, None)
        mine = [delivery for delivery in self._buffer if delivery.queue == queue]
        if mine:
            self._buffer = deque(d for d in self._buffer if d.queue != queue)
            channel = self.channel
            frames = [codec.nack_frame(channel, _tag_of(d)[1], False, True) for d in mine]
            conn.send(b"".join(frames))

    # -- settling --------------------------------------------------------------------------

    def settle(
        self, deliveries: Sequence[Delivery], frame_for: Callable[[int, bool], bytes]
    ) -> bytes:
        """The frames (made by ``frame_for(tag, multiple)``) that settle those of
        ``deliveries`` still outstanding on this connection, which from now on are not."""
        epoch = self.epoch
        outstanding = self._outstanding
        tags = sorted(
            {
                tag[1]
                for tag in map(_tag_of, deliveries)
                if tag[0] == epoch and tag[1] in outstanding
            }
        )
        if not tags:
            return b""
        highest = tags[-1]
        if len(tags) > 1 and self._covers_every_tag_up_to(highest, len(tags)):
            frames = frame_for(highest, True)
        else:
            frames = b"".join([frame_for(tag, False) for tag in tags])
        outstanding.difference_update(tags)
        return frames

    def _covers_every_tag_up_to(self, highest: int, count: int) -> bool:
        """Would a ``multiple`` frame up to ``highest`` settle exactly ``count`` tags?"""
        if self._buffer and _tag_of(self._buffer[0])[1] <= highest:
            return False
        if count == len(self._outstanding):
            return True
        return sum(1 for tag in self._outstanding if tag <= highest) == count

    # -- events from the connection ---------------------------------------------------------

    def on_delivery(
        self, deliver: Deliver, content: Content, body: bytes, unreadable: str | None
    ) -> None:
        consumer_tag, delivery_tag, redelivered, exchange, routing_key = deliver
        content_type, content_encoding, headers, properties = content
        envelope = Envelope(
            body, headers, properties, content_type, content_encoding, exchange, routing_key
        )
        queue = self._consumer_queues.get(consumer_tag, routing_key)
        delivery = Delivery(envelope, (self.epoch, delivery_tag), queue, redelivered)
        if unreadable is None:
            self._buffer.append(delivery)
        else:
            self.unreadable.append((delivery, unreadable))

    def on_cancelled(self, consumer_tag: str) -> None:
        """The broker cancelled a consumer: its queue was deleted (or failed over)."""
        queue = self._consumer_queues.pop(consumer_tag, None)
        if queue is None:
            return
        tags = self._consumers.get(queue, [])
        if consumer_tag in tags:
            tags.remove(consumer_tag)
        if tags:
            return  # the queue's other consumer(s) will be told too
        self._consumers.pop(queue, None)
        self._admin.forget_queue(queue)
        self._cancelled_by_broker.add(queue)
        logger.warning("the broker cancelled the consumer of queue %r (deleted?)", queue)
