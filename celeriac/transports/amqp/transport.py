"""RabbitMQ (AMQP 0-9-1) transport, wire-compatible with Celery/kombu on AMQP.

Three channels on one connection, one part each: *consume* (consumers, QoS, acks:
:mod:`.consuming`), *publish* (publisher confirms: :mod:`.publishing`) and *admin*
(declare, purge, size: :mod:`.admin`); :mod:`.reconnect` keeps the connection and
restores the channels' state on a new one. Keeping the channels apart means a failed
declare or a publish to a missing exchange (the broker closes the channel) never takes
the consumers' unacked messages down with it.

Batching: ``publish`` writes a whole batch with one ``sendall`` and then waits once for
the broker's (usually ``multiple``) confirms; ``ack``/``reject`` settle a run of
contiguous delivery tags with one ``multiple`` frame and never wait.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Envelope
from celeriac.transports.amqp import codec
from celeriac.transports.amqp.admin import AdminChannel
from celeriac.transports.amqp.codec import Content, Deliver
from celeriac.transports.amqp.connection import AMQPConnection, ChannelError, ConnectionLost
from celeriac.transports.amqp.consuming import ConsumeChannel
from celeriac.transports.amqp.params import parse_urls
from celeriac.transports.amqp.publishing import PublishChannel
from celeriac.transports.amqp.reconnect import Reconnector
from celeriac.transports.base import (
    Capabilities,
    TransportOptions,
    dead_letter_by_publishing,
    log_dead_letter,
)
from celeriac.wire.queues import Delivery, QueueSpec

logger = logging.getLogger("celeriac.transports.amqp")


class AMQPTransport:
    """See the module docstring; the contract is :mod:`celeriac.transports.base`."""

    capabilities = Capabilities(priorities=True, cross_process=True, fanout=True)

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        self._brokers = parse_urls(url, self.options)
        extra = self.options.transport_options
        self._admin = AdminChannel()
        self._consuming = ConsumeChannel(self._admin, int(extra.get("prefetch_count") or 0))
        self._publishing = PublishChannel(extra)
        self._reconnector = Reconnector(
            self._brokers, self.options, self, (self._consuming, self._publishing, self._admin)
        )

    def on_void(self, callback: Callable[[], None]) -> None:
        self._consuming.void_callbacks.append(callback)

    def __repr__(self) -> str:
        return f"<AMQPTransport {self._brokers[0].describe()}>"

    # -- the Transport interface -------------------------------------------------------

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        self._reconnector.run(lambda conn: self._admin.declare(conn, queues))
        self._admin.remember(queues)  # declared again after a reconnect

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        publishing = self._publishing
        handed_over = False

        def publish_batch(conn: AMQPConnection) -> None:
            nonlocal handed_over
            if not handed_over:  # after a reconnect, only the waiting is left to do
                conn.poll_if_idle()
                for envelope in envelopes:
                    if not envelope.exchange:
                        self._admin.ensure(conn, envelope.routing_key)
                # In confirm mode the batch is tracked from here on, and a reconnect
                # republishes it.
                handed_over = publishing.confirm
                publishing.send(conn, envelopes)
                handed_over = True
            if publishing.confirm:
                publishing.wait(conn, publishing.window)

        try:
            self._reconnector.run(publish_batch)
        except OperationalError:
            publishing.withdraw(envelopes)
            raise

    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        if ack:
            self.ack(ack)  # acks are frames written without a reply: nothing to merge
        if limit <= 0 or not queues:
            return []
        deadline = time.monotonic() + timeout
        deliveries = self._reconnector.run(
            lambda conn: self._fetch_on(conn, tuple(queues), limit, deadline)
        )
        if self._consuming.unreadable:
            self._dead_letter_unreadable()
        return deliveries

    def _fetch_on(
        self, conn: AMQPConnection, queues: tuple[str, ...], limit: int, deadline: float
    ) -> list[Delivery]:
        self._publishing.confirm_own_writes(conn)
        return self._consuming.fetch(conn, queues, limit, deadline)

    def _dead_letter_unreadable(self) -> None:
        """Messages whose properties did not decode: logged and moved, body as it came."""
        unreadable, self._consuming.unreadable = self._consuming.unreadable, []
        for delivery, reason in unreadable:
            log_dead_letter(f"without an id (delivery {delivery.tag!r})", delivery.queue, reason)
        self.dead_letter(unreadable)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        channel = self._consuming.channel
        self._settle(deliveries, lambda tag, multiple: codec.ack_frame(channel, tag, multiple))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        dead_letter_by_publishing(self, items)

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        channel = self._consuming.channel
        self._settle(
            deliveries, lambda tag, multiple: codec.nack_frame(channel, tag, multiple, requeue)
        )

    def purge(self, queue: str) -> int:
        return self._reconnector.run(lambda conn: self._purge_on(conn, queue))

    def size(self, queue: str) -> int:
        return self._reconnector.run(lambda conn: self._size_on(conn, queue))

    def close(self) -> None:
        conn = self._reconnector.detach()
        if conn is None:
            return
        self._publishing.finish(conn)
        conn.close()
        self._reconnector.forget_connection()
        self._consuming.stop()

    # -- the parts that need more than one channel -------------------------------------------

    def _settle(
        self, deliveries: Sequence[Delivery], frame_for: Callable[[int, bool], bytes]
    ) -> None:
        conn = self._reconnector.conn
        if conn is None or not conn.is_open or not deliveries:
            return  # void deliveries: the broker requeued them with the lost connection
        frames = self._consuming.settle(deliveries, frame_for)
        if not frames:
            return
        try:
            conn.send(frames)
        except ConnectionLost as exc:
            # Not an error of the caller's: the broker requeues what was not settled.
            logger.warning("lost the broker connection (%s); reconnecting on next use", exc)
            self._reconnector.lost()

    def _purge_on(self, conn: AMQPConnection, queue: str) -> int:
        self._publishing.confirm_own_writes(conn)
        if not self._consuming.is_consuming(queue):
            return self._admin.purge(conn, queue)
        # Give back what we prefetched but did not hand out, so it is purged too. The
        # purge goes through the same channel as those rejects, which keeps them in order.
        self._consuming.cancel(conn, queue)
        return self._admin.purge(conn, queue, self._consuming.channel)

    def _size_on(self, conn: AMQPConnection, queue: str) -> int:
        self._publishing.confirm_own_writes(conn)
        return self._admin.size(conn, queue)

    # -- FrameListener: events from the connection -----------------------------------------

    def on_delivery(
        self, channel: int, deliver: Deliver, content: Content, body: bytes, unreadable: str | None
    ) -> None:
        self._consuming.on_delivery(deliver, content, body, unreadable)

    def on_confirm(self, channel: int, delivery_tag: int, multiple: bool, ack: bool) -> None:
        if channel == self._publishing.channel:
            self._publishing.on_confirm(delivery_tag, multiple, ack)

    def on_consumer_cancelled(self, channel: int, consumer_tag: str) -> None:
        self._consuming.on_cancelled(consumer_tag)

    def on_channel_closed(self, channel: int, error: ChannelError) -> None:
        if channel == self._publishing.channel:
            self._publishing.on_closed(error)
        elif channel == self._consuming.channel:
            # Only a bug of ours (e.g. an unknown delivery tag) gets here; the unacked
            # messages of the channel are requeued by the broker, like a lost connection.
            logger.error("the broker closed the consuming channel: %s", error)
            if self._reconnector.conn is not None:
                self._reconnector.conn.abort()
