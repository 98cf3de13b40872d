"""RabbitMQ (AMQP 0-9-1) transport, wire-compatible with Celery/kombu on AMQP.

Three channels on one connection: *consume* (qos, consumers, acks), *publish* (publisher
confirms) and *admin* (declare, purge, size). Keeping them apart means a failed declare or
a publish to a missing exchange (the broker closes the channel) never takes the
consumers' unacked messages down with it.

Batching: ``publish`` writes a whole batch with one ``sendall`` and then waits once for
the broker's (usually ``multiple``) confirms; ``ack``/``reject`` settle a run of
contiguous delivery tags with one ``multiple`` frame and never wait.

Confirms (``transport_options["confirm_publish"]``): ``"pipelined"`` (default) returns
once the batch is written and keeps up to ``confirm_window`` messages unconfirmed, which
run at the speed of unconfirmed publishing yet are still republished after a reconnect,
waited for before this transport reads queues (``size``, ``fetch``, ``purge``) and on
``close``; a refusal surfaces on a later call. ``True`` waits for them in every
``publish`` call; for persistent messages the broker confirms after writing to disk, so
one-message calls are bound by its fsync latency (~1 ms here). ``False`` turns confirms
off (kombu's default).

Prefetch: the window starts at ``max(prefetch_count option, limit)``; when the caller
holds unacked messages and asks for more than the window lets through, it grows (see
``_consume``). Consuming several queues gives each its own window (per-consumer QoS).

Reconnection: any operation that finds the connection lost reconnects with backoff,
declares again what it declared, re-consumes, and republishes messages whose confirms
had not arrived. Deliveries received on the lost connection are void (the broker has
requeued them): acking or rejecting them is a no-op.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

from pika import spec

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Envelope
from celeriac.transports.amqp import codec
from celeriac.transports.amqp.connection import (
    AMQPConnection,
    ChannelError,
    ConnectionLost,
    ConnectionParams,
)
from celeriac.transports.amqp.params import parse_urls
from celeriac.transports.base import (
    Capabilities,
    TransportOptions,
    dead_letter_by_publishing,
    log_dead_letter,
)
from celeriac.wire.queues import Delivery, QueueSpec

logger = logging.getLogger("celeriac.transports.amqp")

T = TypeVar("T")

NOT_FOUND = 404
#: Tags of deliveries: (connection epoch, AMQP delivery tag). The epoch makes deliveries
#: from a lost connection recognisable, so settling them is skipped instead of failing.
DeliveryTag = tuple[int, int]


def _tag_of(delivery: Delivery) -> DeliveryTag:
    return cast(DeliveryTag, delivery.tag)


class AMQPTransport:
    """See the module docstring; the contract is :mod:`celeriac.transports.base`."""

    capabilities = Capabilities(priorities=True, cross_process=True, fanout=True)

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        self._brokers = parse_urls(url, self.options)
        extra = self.options.transport_options
        self._confirm, self._confirm_window = _confirm_mode(extra)
        self._prefetch_option = int(extra.get("prefetch_count") or 0)
        self._interval_start = float(extra.get("interval_start", 0.0))
        self._interval_step = float(extra.get("interval_step", 0.5))
        self._interval_max = float(extra.get("interval_max", 5.0))
        max_retries = extra.get("max_retries", self.options.connection_max_retries)
        self._max_retries: int | None = None if max_retries is None else int(max_retries)
        self._pid = os.getpid()

        self._conn: AMQPConnection | None = None
        self._epoch = 0
        self._consume_channel = self._publish_channel = self._admin_channel = 0
        # Topology declared through this transport, replayed after a reconnect.
        self._specs: dict[str, QueueSpec] = {}
        self._existing_queues: set[str] = set()
        # Consuming.
        self._consumers: dict[str, list[str]] = {}  # queue → consumer tags
        self._consumer_queues: dict[str, str] = {}  # consumer tag → queue
        self._wanted_queues: tuple[str, ...] = ()
        self._cancelled_by_broker: set[str] = set()
        self._buffer: deque[Delivery] = deque()
        #: Deliveries whose properties did not decode, with why: dead-lettered by ``fetch``.
        self._unreadable: list[tuple[Delivery, str]] = []
        self._outstanding: set[int] = set()  # returned by fetch, not yet settled
        self._prefetch = 0
        self._qos_sent = 0
        self._last_limit = 1
        self._consumer_seq = 0
        # Publishing (confirm mode): sequence number → envelope until the broker confirms.
        self._publish_seq = 0
        # Ordered by sequence number; an OrderedDict pops from the front in O(1).
        self._unconfirmed: OrderedDict[int, Envelope] = OrderedDict()
        self._refused: list[Envelope] = []
        self._publish_error: ChannelError | None = None
        self._published_unconfirmed = False

    def __repr__(self) -> str:
        return f"<AMQPTransport {self._brokers[0].describe()}>"

    # -- the Transport interface -------------------------------------------------------

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        self._run(lambda conn: self._declare_on(conn, queues))
        for queue in queues:  # declared again after a reconnect
            self._specs[queue.name] = queue

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        handed_over = False

        def publish_batch(conn: AMQPConnection) -> None:
            nonlocal handed_over
            if not handed_over:  # after a reconnect, only the waiting is left to do
                conn.poll_if_idle()
                for envelope in envelopes:
                    if not envelope.exchange:
                        self._ensure_queue(conn, envelope.routing_key)
                # In confirm mode the batch is in ``_unconfirmed`` from here on, and a
                # reconnect republishes it from there.
                handed_over = self._confirm
                self._send_envelopes(conn, envelopes)
                handed_over = True
                self._published_unconfirmed = not self._confirm
            if self._confirm:
                self._wait_for_confirms(conn, self._confirm_window)

        try:
            self._run(publish_batch)
        except OperationalError:
            # The caller learns that this batch failed and owns retrying it: it must not
            # also be republished from here after a reconnect (earlier pipelined ones are).
            mine = {id(envelope) for envelope in envelopes}
            for seq in [seq for seq, env in self._unconfirmed.items() if id(env) in mine]:
                del self._unconfirmed[seq]
            raise

    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        if ack:
            self.ack(ack)  # acks are frames written without a reply: nothing to merge
        if limit <= 0 or not queues:
            return []
        deadline = time.monotonic() + timeout
        deliveries = self._run(lambda conn: self._fetch_on(conn, tuple(queues), limit, deadline))
        if self._unreadable:
            self._dead_letter_unreadable()
        return deliveries

    def _dead_letter_unreadable(self) -> None:
        """Messages whose properties did not decode: logged and moved, body as it came."""
        unreadable, self._unreadable = self._unreadable, []
        for delivery, reason in unreadable:
            log_dead_letter(f"without an id (delivery {delivery.tag!r})", delivery.queue, reason)
        self.dead_letter(unreadable)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        channel = self._consume_channel
        self._settle(deliveries, lambda tag, multiple: codec.ack_frame(channel, tag, multiple))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        dead_letter_by_publishing(self, items)

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        channel = self._consume_channel
        self._settle(
            deliveries, lambda tag, multiple: codec.nack_frame(channel, tag, multiple, requeue)
        )

    def purge(self, queue: str) -> int:
        return self._run(lambda conn: self._purge_on(conn, queue))

    def size(self, queue: str) -> int:
        return self._run(lambda conn: self._size_on(conn, queue))

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if os.getpid() != self._pid:
            return  # the socket belongs to the parent process: leave it alone
        try:
            if self._unconfirmed and conn.is_open:
                self._wait_for_confirms(conn, 0)
            elif self._published_unconfirmed and conn.is_open:
                # Without confirms, a round trip on the publishing channel makes sure the
                # broker has routed everything before the connection goes (it drops
                # messages still in flight when a connection closes).
                conn.rpc(self._publish_channel, spec.Basic.Qos(), spec.Basic.QosOk)
        except (ConnectionLost, ChannelError, OperationalError) as exc:
            logger.warning(
                "closing with %d unconfirmed message(s): %s", len(self._unconfirmed), exc
            )
        conn.close()
        self._published_unconfirmed = False
        self._forget_connection_state()
        self._wanted_queues = ()
        self._unconfirmed.clear()

    # -- connection management -----------------------------------------------------------

    def _run(self, operation: Callable[[AMQPConnection], T]) -> T:
        """Run ``operation`` on an open connection, reconnecting when it is lost."""
        losses = 0
        while True:
            conn = self._connection()
            try:
                return operation(conn)
            except ConnectionLost as exc:
                self._lost()
                losses += 1
                if (
                    not exc.retryable
                    or not self.options.connection_retry
                    or (self._max_retries is not None and losses > self._max_retries)
                ):
                    raise OperationalError(f"broker connection lost: {exc}") from exc
                logger.warning("lost the broker connection (%s); reconnecting", exc)

    def _connection(self) -> AMQPConnection:
        if self._conn is not None:
            if self._conn.is_open:
                return self._conn
            self._lost()
        if os.getpid() != self._pid:
            raise OperationalError("AMQPTransport used after fork: create one per process")
        attempt = 0
        while True:
            broker = self._brokers[attempt % len(self._brokers)]
            try:
                return self._connect(broker)
            except ConnectionLost as exc:
                attempt += 1
                if (
                    not exc.retryable
                    or not self.options.connection_retry
                    or (self._max_retries is not None and attempt > self._max_retries)
                ):
                    raise OperationalError(str(exc)) from exc
                delay = min(
                    self._interval_start + self._interval_step * (attempt - 1), self._interval_max
                )
                limit = "∞" if self._max_retries is None else self._max_retries
                where = broker.describe()
                reason = str(exc) if where in str(exc) else f"{where}: {exc}"
                logger.warning(
                    "%s; retry %d/%s in %.1fs",
                    reason,
                    attempt,
                    limit,
                    delay,
                )
                time.sleep(delay)

    def _connect(self, broker: ConnectionParams) -> AMQPConnection:
        conn = AMQPConnection(broker, self)
        conn.open()
        try:
            self._consume_channel = conn.open_channel()
            self._publish_channel = self._open_publish_channel(conn)
            self._admin_channel = conn.open_channel()
            self._conn = conn
            self._restore(conn)
        except (ChannelError, OperationalError) as exc:
            conn.close()
            self._conn = None
            self._forget_connection_state()
            raise OperationalError(f"setting up {broker.describe()} failed: {exc}") from exc
        except ConnectionLost:
            self._conn = None
            self._forget_connection_state()
            raise
        if self._epoch:
            logger.info("reconnected to %s", broker.describe())
        return conn

    def _open_publish_channel(self, conn: AMQPConnection) -> int:
        channel = conn.open_channel()
        if self._confirm:
            conn.rpc(channel, spec.Confirm.Select(), spec.Confirm.SelectOk)
        self._publish_seq = 0
        self._publish_error = None
        return channel

    def _restore(self, conn: AMQPConnection) -> None:
        """After a reconnect: declarations, consumers, then unconfirmed messages."""
        if self._specs:
            self._declare_on(conn, list(self._specs.values()))
        if self._wanted_queues:
            self._consume(conn, self._wanted_queues, self._last_limit)
        if self._unconfirmed:
            pending = list(self._unconfirmed.values())
            self._unconfirmed.clear()
            logger.warning("republishing %d unconfirmed message(s)", len(pending))
            self._send_envelopes(conn, pending)

    def _lost(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._forget_connection_state()

    def _forget_connection_state(self) -> None:
        self._epoch += 1
        self._consumers.clear()
        self._consumer_queues.clear()
        self._cancelled_by_broker.clear()
        self._buffer.clear()
        self._outstanding.clear()
        self._prefetch = 0
        self._qos_sent = 0
        # Exclusive and auto-delete queues die with the connection.
        self._existing_queues = {
            name
            for name in self._existing_queues
            if name not in self._specs
            or not (self._specs[name].exclusive or self._specs[name].auto_delete)
        }

    def _reopen_channel(self, conn: AMQPConnection, channel: int) -> int:
        conn.discard_channel(channel)
        if channel == self._publish_channel:
            self._publish_channel = self._open_publish_channel(conn)
            return self._publish_channel
        self._admin_channel = conn.open_channel()
        return self._admin_channel

    def _admin_rpc(self, conn: AMQPConnection, method: Any, expected: type) -> Any:
        """An admin-channel RPC; a channel error reopens the channel and is re-raised."""
        try:
            return conn.rpc(self._admin_channel, method, expected)
        except ChannelError:
            self._reopen_channel(conn, self._admin_channel)
            raise

    # -- FrameListener: events from the connection -----------------------------------------

    def on_delivery(
        self,
        channel: int,
        deliver: tuple[str, int, bool, str, str],
        content: tuple[str, str, dict[str, Any], dict[str, Any]],
        body: bytes,
        unreadable: str | None = None,
    ) -> None:
        consumer_tag, delivery_tag, redelivered, exchange, routing_key = deliver
        content_type, content_encoding, headers, properties = content
        envelope = Envelope(
            body, headers, properties, content_type, content_encoding, exchange, routing_key
        )
        queue = self._consumer_queues.get(consumer_tag, routing_key)
        delivery = Delivery(envelope, (self._epoch, delivery_tag), queue, redelivered)
        if unreadable is None:
            self._buffer.append(delivery)
        else:
            self._unreadable.append((delivery, unreadable))

    def on_confirm(self, channel: int, delivery_tag: int, multiple: bool, ack: bool) -> None:
        if channel != self._publish_channel:
            return
        unconfirmed = self._unconfirmed
        if not multiple:
            settled = [unconfirmed.pop(delivery_tag)] if delivery_tag in unconfirmed else []
        elif delivery_tag >= self._publish_seq:
            settled = list(unconfirmed.values())
            unconfirmed.clear()
        else:
            settled = []
            while unconfirmed and next(iter(unconfirmed)) <= delivery_tag:
                settled.append(unconfirmed.popitem(last=False)[1])
        if not ack:
            self._refused.extend(settled)

    def on_consumer_cancelled(self, channel: int, consumer_tag: str) -> None:
        queue = self._consumer_queues.pop(consumer_tag, None)
        if queue is None:
            return
        tags = self._consumers.get(queue, [])
        if consumer_tag in tags:
            tags.remove(consumer_tag)
        if tags:
            return  # the queue's other consumer(s) will be told too
        self._consumers.pop(queue, None)
        self._existing_queues.discard(queue)
        self._cancelled_by_broker.add(queue)
        logger.warning("the broker cancelled the consumer of queue %r (deleted?)", queue)

    def on_channel_closed(self, channel: int, error: ChannelError) -> None:
        if channel == self._publish_channel:
            self._publish_error = error
        elif channel == self._consume_channel:
            # Only a bug of ours (e.g. an unknown delivery tag) gets here; the unacked
            # messages of the channel are requeued by the broker, like a lost connection.
            logger.error("the broker closed the consuming channel: %s", error)
            if self._conn is not None:
                self._conn.abort()

    # -- declare ---------------------------------------------------------------------------

    def _declare_on(self, conn: AMQPConnection, queues: Sequence[QueueSpec]) -> None:
        declared_exchanges: set[str] = set()
        for queue in queues:
            if queue.exchange and queue.exchange not in declared_exchanges:
                self._declare_exchange(conn, queue)
                declared_exchanges.add(queue.exchange)
            arguments = dict(queue.arguments)
            if queue.max_priority is not None:
                arguments["x-max-priority"] = queue.max_priority
            method = spec.Queue.Declare(
                queue=queue.name,
                durable=queue.durable,
                exclusive=queue.exclusive,
                auto_delete=queue.auto_delete,
                arguments=arguments,
            )
            try:
                self._admin_rpc(conn, method, spec.Queue.DeclareOk)
                if queue.exchange:
                    bind = spec.Queue.Bind(
                        queue=queue.name, exchange=queue.exchange, routing_key=queue.binding_key
                    )
                    self._admin_rpc(conn, bind, spec.Queue.BindOk)
            except ChannelError as exc:
                raise OperationalError(f"declaring queue {queue.name!r} failed: {exc}") from exc
            self._existing_queues.add(queue.name)

    def _declare_exchange(self, conn: AMQPConnection, queue: QueueSpec) -> None:
        method = spec.Exchange.Declare(
            exchange=queue.exchange, type=queue.exchange_type, durable=queue.durable
        )
        try:
            self._admin_rpc(conn, method, spec.Exchange.DeclareOk)
        except ChannelError as exc:
            # Declared before with other flags (e.g. durable by a Celery app): it exists,
            # which is all binding needs. Anything else is an error.
            if exc.reply_code != 406:
                raise OperationalError(
                    f"declaring exchange {queue.exchange!r} failed: {exc}"
                ) from exc
            logger.debug("exchange %r exists with other flags: %s", queue.exchange, exc)

    def _ensure_queue(self, conn: AMQPConnection, name: str) -> None:
        """Queues come into being when first published to or consumed from."""
        if name in self._existing_queues or not name or name.startswith("amq."):
            return
        queue_spec = self._specs.get(name)
        if queue_spec is not None:
            self._declare_on(conn, [queue_spec])
            return
        try:
            self._admin_rpc(
                conn, spec.Queue.Declare(queue=name, passive=True), spec.Queue.DeclareOk
            )
        except ChannelError as exc:
            if exc.reply_code != NOT_FOUND:
                raise OperationalError(f"checking queue {name!r} failed: {exc}") from exc
            self._declare_on(conn, [QueueSpec(name)])
        self._existing_queues.add(name)

    # -- publish ---------------------------------------------------------------------------

    def _send_envelopes(self, conn: AMQPConnection, envelopes: Sequence[Envelope]) -> None:
        channel = self._publish_channel
        frame_max = conn.frame_max
        frames = []
        for envelope in envelopes:
            properties = envelope.properties
            if "delivery_mode" not in properties:
                properties = {**properties, "delivery_mode": 2}
            flags, property_list = codec.encode_properties(
                envelope.content_type, envelope.content_encoding, envelope.headers, properties
            )
            frames.append(
                codec.publish_frames(
                    channel,
                    envelope.exchange,
                    envelope.routing_key,
                    envelope.body,
                    flags,
                    property_list,
                    frame_max,
                )
            )
        if self._confirm:
            seq = self._publish_seq
            for envelope in envelopes:
                seq += 1
                self._unconfirmed[seq] = envelope
            self._publish_seq = seq
        conn.send(b"".join(frames))

    def _confirm_own_writes(self, conn: AMQPConnection) -> None:
        """Pipelined confirms: what this transport published is on the broker before it
        looks at queues (read-your-writes), so ``size``/``fetch``/``purge`` see it."""
        if self._unconfirmed:
            self._wait_for_confirms(conn, 0)

    def _wait_for_confirms(self, conn: AMQPConnection, allowed: int) -> None:
        """Wait until at most ``allowed`` messages are unconfirmed; report failures."""
        if allowed and len(self._unconfirmed) > allowed // 2:
            conn.pump(0)  # collect the confirms that have arrived, without waiting
        while len(self._unconfirmed) > allowed and self._publish_error is None:
            conn.pump(None)
        error, self._publish_error = self._publish_error, None
        refused, self._refused = self._refused, []
        if error is not None:
            lost = len(self._unconfirmed)
            self._unconfirmed.clear()
            self._reopen_channel(conn, self._publish_channel)
            raise OperationalError(f"publishing failed, {lost} message(s) not sent: {error}")
        if refused:
            ids = ", ".join(str(envelope.headers.get("id")) for envelope in refused[:5])
            raise OperationalError(
                f"the broker refused {len(refused)} message(s) (basic.nack; ids {ids}...)"
            )

    # -- consume ---------------------------------------------------------------------------

    def _fetch_on(
        self, conn: AMQPConnection, queues: tuple[str, ...], limit: int, deadline: float
    ) -> list[Delivery]:
        self._confirm_own_writes(conn)
        self._consume(conn, queues, limit)
        buffer = self._buffer
        if len(buffer) < limit:
            conn.pump(0)  # take what has already arrived, without waiting
        while not buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            conn.pump(remaining)
            if self._cancelled_by_broker:
                self._consume(conn, queues, limit)
        count = min(limit, len(buffer))
        taken = [buffer.popleft() for _ in range(count)]
        self._outstanding.update([_tag_of(delivery)[1] for delivery in taken])
        return taken

    def _consume(self, conn: AMQPConnection, queues: tuple[str, ...], limit: int) -> None:
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
                self._cancel(conn, queue)
            self._wanted_queues = queues
        if not self._consumers:
            self._prefetch = 0
        need = max(self._prefetch_option, len(self._outstanding) + limit, 1)
        window = max(need, self._prefetch)
        if self._prefetch and need > self._prefetch:
            window = max(need, self._prefetch * 3 // 2)  # geometric: few extra consumers
            self._set_qos(conn, window - self._prefetch)
            for queue in list(self._consumers):
                self._start_consumer(conn, queue)
        starting = [queue for queue in queues if queue not in self._consumers]
        if starting:
            self._set_qos(conn, window)
            for queue in starting:
                self._start_consumer(conn, queue)
        self._prefetch = window
        self._cancelled_by_broker.clear()

    def _set_qos(self, conn: AMQPConnection, prefetch_count: int) -> None:
        if prefetch_count != self._qos_sent:
            method = spec.Basic.Qos(prefetch_count=min(prefetch_count, 65535))
            conn.rpc(self._consume_channel, method, spec.Basic.QosOk)
            self._qos_sent = prefetch_count

    def _start_consumer(self, conn: AMQPConnection, queue: str) -> None:
        if queue in self._cancelled_by_broker:
            logger.warning("consuming queue %r again (declared anew)", queue)
        self._ensure_queue(conn, queue)
        self._consumer_seq += 1
        consumer_tag = f"celeriac.{os.getpid()}.{self._consumer_seq}"
        self._consumer_queues[consumer_tag] = queue
        self._consumers.setdefault(queue, []).append(consumer_tag)
        try:
            conn.rpc(
                self._consume_channel,
                spec.Basic.Consume(queue=queue, consumer_tag=consumer_tag),
                spec.Basic.ConsumeOk,
            )
        except ChannelError as exc:  # e.g. 405: another connection's exclusive queue
            raise OperationalError(f"consuming queue {queue!r} failed: {exc}") from exc

    def _cancel(self, conn: AMQPConnection, queue: str) -> None:
        """Stop consuming ``queue``; what was prefetched and not handed out goes back."""
        for consumer_tag in self._consumers.pop(queue):
            conn.rpc(self._consume_channel, spec.Basic.Cancel(consumer_tag), spec.Basic.CancelOk)
            self._consumer_queues.pop(consumer_tag, None)
        mine = [delivery for delivery in self._buffer if delivery.queue == queue]
        if mine:
            self._buffer = deque(d for d in self._buffer if d.queue != queue)
            channel = self._consume_channel
            frames = [codec.nack_frame(channel, _tag_of(d)[1], False, True) for d in mine]
            conn.send(b"".join(frames))

    # -- ack / reject ----------------------------------------------------------------------

    def _settle(
        self, deliveries: Sequence[Delivery], frame_for: Callable[[int, bool], bytes]
    ) -> None:
        conn = self._conn
        if conn is None or not conn.is_open or not deliveries:
            return  # void deliveries: the broker requeued them with the lost connection
        epoch = self._epoch
        outstanding = self._outstanding
        tags = sorted(
            {
                tag[1]
                for tag in map(_tag_of, deliveries)
                if tag[0] == epoch and tag[1] in outstanding
            }
        )
        if not tags:
            return
        highest = tags[-1]
        if len(tags) > 1 and self._covers_every_tag_up_to(highest, len(tags)):
            frames = frame_for(highest, True)
        else:
            frames = b"".join([frame_for(tag, False) for tag in tags])
        outstanding.difference_update(tags)
        try:
            conn.send(frames)
        except ConnectionLost as exc:
            # Not an error of the caller's: the broker requeues what was not settled.
            logger.warning("lost the broker connection (%s); reconnecting on next use", exc)
            self._lost()

    def _covers_every_tag_up_to(self, highest: int, count: int) -> bool:
        """Would a ``multiple`` frame up to ``highest`` settle exactly ``count`` tags?"""
        if self._buffer and _tag_of(self._buffer[0])[1] <= highest:
            return False
        if count == len(self._outstanding):
            return True
        return sum(1 for tag in self._outstanding if tag <= highest) == count

    # -- purge / size ----------------------------------------------------------------------

    def _purge_on(self, conn: AMQPConnection, queue: str) -> int:
        self._confirm_own_writes(conn)
        channel = self._admin_channel
        if queue in self._consumers:
            # Give back what we prefetched but did not hand out, so it is purged too. The
            # purge goes through the same channel as those rejects, which keeps them in order.
            self._cancel(conn, queue)
            channel = self._consume_channel
        method = spec.Queue.Purge(queue=queue)
        try:
            if channel == self._admin_channel:
                reply = self._admin_rpc(conn, method, spec.Queue.PurgeOk)
            else:
                reply = conn.rpc(channel, method, spec.Queue.PurgeOk)
        except ChannelError as exc:
            if exc.reply_code == NOT_FOUND:
                return 0
            raise OperationalError(f"purging queue {queue!r} failed: {exc}") from exc
        return int(reply.message_count)

    def _size_on(self, conn: AMQPConnection, queue: str) -> int:
        self._confirm_own_writes(conn)
        try:
            reply = self._admin_rpc(
                conn, spec.Queue.Declare(queue=queue, passive=True), spec.Queue.DeclareOk
            )
        except ChannelError as exc:
            if exc.reply_code == NOT_FOUND:
                return 0
            raise OperationalError(f"sizing queue {queue!r} failed: {exc}") from exc
        return int(reply.message_count)


def _confirm_mode(transport_options: Mapping[str, Any]) -> tuple[bool, int]:
    """(publisher confirms on, how many messages may stay unconfirmed after ``publish``).

    ``confirm_publish``: ``"pipelined"`` (default) — ``publish`` returns once the batch is
    written, keeping up to ``confirm_window`` messages unconfirmed (republished after a
    reconnect, waited for on ``close`` and before this transport reads a queue; a refusal is
    raised by a later call); ``True`` — ``publish`` returns once the broker has confirmed
    the batch (one wait per batch: as slow as the broker's disk); ``False`` — no confirms
    (kombu's default).

    Pipelined is the default because waiting for a persistent message's confirm costs a disk
    sync per call (~1 ms), while pipelining keeps Celery-like latency and still never loses
    a message to a connection drop.
    """
    setting = transport_options.get("confirm_publish", "pipelined")
    if setting == "pipelined":
        return True, max(int(transport_options.get("confirm_window", 10000)), 1)
    return bool(setting), 0
