"""The Redis broker, wire-compatible with kombu's Redis transport (Celery 5).

Celery producers and workers can share the queues with celeriac: same lists, same JSON
envelope, same priority sub-lists, same binding sets, same fanout channels (see
:mod:`~celeriac.transports.redis.keyspace` and :mod:`~celeriac.transports.redis.envelope`).
What differs is how reserved messages are kept (see
:mod:`~celeriac.transports.redis.holding`): never redelivered while their consumer lives,
always redelivered when it is gone.

Round trips: ``publish`` is one pipeline (one ``LPUSH`` per list, all messages of that list
in it, plus one read of the binding tables when a named exchange is used); ``fetch`` is one
script that pops up to ``limit`` messages in priority order and records them as held;
``ack`` is one ``HDEL``. An empty fetch sleeps on the doorbell (no polling, nothing popped).

Priorities: the message's ``priority`` property is passed through unchanged, as Celery
does, and by default follows kombu's order on Redis — **0 is fetched first** and 9 last,
in four steps (0-2, 3-5, 6-8, 9). The transport option ``priority_order="higher_first"``
makes a higher number go first (AMQP's order) for messages celeriac publishes; only then
does the transport report ``capabilities.priorities``.

Transport options (``broker_transport_options``): ``global_keyprefix``, ``sep``,
``priority_steps``, ``priority_order``, ``queue_order_strategy`` (``round_robin``, default;
``priority``: the order given; ``sorted``), ``fanout_prefix``, ``fanout_patterns``,
``fanout_exchanges`` (extra exchange names that are fanout whoever declared them),
``holder_heartbeat_interval`` (2 s), ``holder_expires`` (10 s),
``holder_check_interval`` (2 s), ``polling_interval`` (0.1 s, only when the server refuses
``CLIENT TRACKING``), ``socket_timeout``, ``max_connections``.

Queues declared ``auto_delete`` (or ``exclusive``), like Celery's reply and event queues,
are deleted with their bindings when the transport that declared them closes.

Needs Redis >= 6.2 (``RPOP`` with a count). Not for Redis Cluster.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from celeriac.protocol.message import Envelope
from celeriac.transports.base import (
    Capabilities,
    TransportOptions,
    dead_letter_by_publishing,
    dead_letter_queue,
    log_dead_letter,
)
from celeriac.transports.redis import envelope as envelope_codec
from celeriac.transports.redis.doorbell import Doorbell
from celeriac.transports.redis.holding import (
    MAX_FETCH,
    Heartbeat,
    Scripts,
    release_holder,
    requeue_held,
)
from celeriac.transports.redis.keyspace import (
    DEFAULT_FANOUT_EXCHANGES,
    Binding,
    KeySpace,
    publish_commands,
    topic_pattern,
)
from celeriac.wire.queues import Delivery, QueueSpec
from celeriac.wire.redis.commands import Arg, PooledWire, Wire
from celeriac.wire.redis.connection import (
    RETRYABLE,
    call_with_retry,
    connection_pool,
    database_of,
)
from celeriac.wire.urls import safe_url

logger = logging.getLogger("celeriac.transports.redis")

T = TypeVar("T")

#: Longest single sleep of an empty fetch: a safety net should a wake-up ever be missed.
_MAX_SLEEP = 1.0
#: Longest pause between retries of a lost connection.
_MAX_RETRY_DELAY = 5.0


class _Consumer:
    """The consuming side of a transport: its connection, doorbell and heartbeat."""

    def __init__(self, transport: RedisTransport) -> None:
        self.client = redis.Redis(connection_pool=transport._pool, single_connection_client=True)
        self.scripts = Scripts(self.client)
        self.wire = Wire(self.client.connection)  # type: ignore[arg-type]
        timeout = transport.options.connection_timeout
        self.doorbell = Doorbell(transport._pool, timeout)
        try:
            self.client.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "TRACKING", "ON", "REDIRECT", self.doorbell.client_id, "NOLOOP"
            )
            self.tracking = True
        except redis.ResponseError as exc:
            logger.info("Redis refuses CLIENT TRACKING (%s): empty fetches will poll", exc)
            self.tracking = False

    def close(self) -> None:
        self.doorbell.close()
        with contextlib.suppress(redis.RedisError):  # already broken: nothing to release
            self.client.close()


class RedisTransport:
    """``redis://``, ``rediss://`` and ``redis+socket://`` brokers."""

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        self._limits = self.options.limits
        extra: Mapping[str, Any] = self.options.transport_options
        self._pool = connection_pool(
            url,
            "broker_url",
            connect_timeout=self.options.connection_timeout,
            socket_timeout=extra.get("socket_timeout", 30.0),
            health_check_interval=int(extra.get("health_check_interval", 0)),
            max_connections=extra.get("max_connections"),
        )
        self._client = redis.Redis(connection_pool=self._pool)
        self._scripts = Scripts(self._client)
        #: The connection publish, fetch and ack go through (checked out once).
        self._commands = PooledWire(self, self._pool)
        self._keys = KeySpace.from_options(extra, database_of(self._pool))
        self.capabilities = Capabilities(
            priorities=self._keys.higher_first, cross_process=True, fanout=True
        )
        self._queue_order = str(extra.get("queue_order_strategy", "round_robin"))
        self._heartbeat_interval = float(extra.get("holder_heartbeat_interval", 2.0))
        self._holder_expires = float(extra.get("holder_expires", 10.0))
        self._check_interval = float(extra.get("holder_check_interval", 2.0))
        self._polling_interval = float(extra.get("polling_interval", 0.1))
        #: exchange → type, as declared here or read from ``celeriac.exchanges``
        self._exchange_types: dict[str, str] = dict.fromkeys(
            (*DEFAULT_FANOUT_EXCHANGES, *extra.get("fanout_exchanges", ())), "fanout"
        )
        #: fanout-bound queue → the channel patterns it listens to
        self._fanout_queues: dict[str, list[str]] = {}
        #: auto-delete (or exclusive) queue → its (exchange, binding member) pairs
        self._auto_delete: dict[str, list[tuple[str, str]]] = {}
        self._holder = uuid.uuid4().hex
        self._pid = os.getpid()
        self._consumer: _Consumer | None = None
        self._heartbeat: Heartbeat | None = None
        self._next_tag = 1
        #: tag ranges of fetches whose reply was lost: their messages may sit in our hash
        self._orphaned: list[range] = []
        self._rotation = 0
        self._closed = False
        self._encoder = envelope_codec.Encoder()
        #: priority property → step, for the usual integer priorities
        self._steps = {priority: self._keys.step_of(priority) for priority in range(10)}

    def __repr__(self) -> str:
        return f"<RedisTransport {safe_url(self.url)!r}>"

    # -- declare and publish -----------------------------------------------------------

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        fanout: list[tuple[str, list[str]]] = []

        def write() -> None:
            pipe = self._client.pipeline(transaction=False)
            for spec in queues:
                if spec.auto_delete or spec.exclusive:
                    self._auto_delete.setdefault(spec.name, [])
                if not spec.exchange:
                    continue
                kind = self._exchange_types.get(spec.exchange, spec.exchange_type)
                if spec.exchange_type == "fanout":
                    kind = "fanout"
                if kind == "fanout":
                    # kombu binds fanout queues with the routing key as given (pidbox: '').
                    member = self._keys.binding_member(spec.routing_key, "", spec.name)
                    patterns = self._keys.fanout_subscriptions(spec.exchange, spec.routing_key)
                    fanout.append((spec.name, patterns))
                else:
                    key = spec.binding_key
                    regex = topic_pattern(key) if kind == "topic" else ""
                    member = self._keys.binding_member(key, regex, spec.name)
                self._exchange_types[spec.exchange] = kind
                if kind == "fanout":
                    # Producers that never declared it must know to PUBLISH; direct and
                    # topic need no record, their binding members say how to match.
                    pipe.hset(self._keys.exchange_types_key, spec.exchange, kind)
                pipe.sadd(self._keys.bindings_key(spec.exchange), member)
                pipe.sadd(self._keys.permanent_bindings_key(spec.exchange), member)
                if spec.name in self._auto_delete:
                    self._auto_delete[spec.name].append((spec.exchange, member))
            pipe.execute()

        self._call("declare", write)
        if fanout:
            self._call("subscribe", lambda: self._subscribe_fanout(fanout))

    def _subscribe_fanout(self, fanout: Sequence[tuple[str, list[str]]]) -> None:
        consumer = self._consuming()
        for queue, patterns in fanout:
            self._fanout_queues[queue] = patterns
            for pattern in patterns:
                consumer.doorbell.subscribe_fanout(pattern, queue)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        if envelopes:
            self._call("publish", lambda: self._publish(envelopes))

    def _publish(self, envelopes: Sequence[Envelope]) -> None:
        types = self._exchange_types
        # Fanout exchanges need no binding table: they publish on a channel.
        named = {e.exchange for e in envelopes if e.exchange and types.get(e.exchange) != "fanout"}
        bindings = self._read_bindings(named) if named else {}
        commands = publish_commands(
            self._keys, envelopes, types, bindings, self._encoder, self._steps
        )
        if commands:
            self._commands().pipeline(commands)

    def _read_bindings(self, exchanges: set[str]) -> dict[str, list[Binding]]:
        """The bindings of ``exchanges``; learns the type of exchanges not known yet."""
        names = sorted(exchanges)
        unknown = [name for name in names if name not in self._exchange_types]
        pipe = self._client.pipeline(transaction=False)
        if unknown:
            pipe.hmget(self._keys.exchange_types_key, unknown)
        for name in names:
            pipe.smembers(self._keys.bindings_key(name))
        replies = pipe.execute()
        if unknown:
            for name, kind in zip(unknown, replies.pop(0), strict=True):
                if kind is not None:
                    self._exchange_types[name] = kind.decode()
        return {
            name: self._keys.parse_members(sorted(members))
            for name, members in zip(names, replies, strict=True)
        }

    # -- fetch ---------------------------------------------------------------------------

    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        if not queues or limit <= 0:
            self.ack(ack)
            return []
        tags = [delivery.tag for delivery in ack if type(delivery.tag) is int]
        if len(tags) > MAX_FETCH:  # more than one script call should carry
            self.ack(ack)
            tags = []
        deadline = time.monotonic() + max(timeout, 0.0)
        limit = min(limit, MAX_FETCH)
        return self._call("fetch", lambda: self._fetch_until(queues, limit, deadline, tags))

    def _fetch_until(
        self, queues: Sequence[str], limit: int, deadline: float, acks: list[int]
    ) -> list[Delivery]:
        """Take what is there, else sleep on the doorbell until the deadline.

        ``acks`` (tags) are removed by the first fetch script, or first of all when the
        queues are fanout only (no script runs).
        """
        consumer = self._consuming()
        if self._orphaned:
            self._requeue_orphans(consumer)
        lists = [queue for queue in queues if queue not in self._fanout_queues]
        fanout = [queue for queue in queues if queue in self._fanout_queues]
        if acks and not lists:
            self._commands().call("HDEL", self._keys.held_key(self._holder), *acks)
        while True:
            deliveries = consumer.doorbell.take_fanout(fanout, limit) if fanout else []
            if lists and len(deliveries) < limit:
                deliveries += self._take(consumer, lists, limit - len(deliveries), acks)
                acks = []
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            # The fetch script left the lists tracked: a push to any of them rings.
            sleep = _MAX_SLEEP if consumer.tracking else self._polling_interval
            consumer.doorbell.wait(min(remaining, sleep))

    def _take(
        self, consumer: _Consumer, queues: Sequence[str], limit: int, acks: Sequence[int] = ()
    ) -> list[Delivery]:
        ordered = self._ordered(queues)
        steps = self._keys.priority_steps
        # Priority-major, as kombu's BRPOP: every queue's step 0 before any step 3.
        owners = [queue for _ in steps for queue in ordered]
        lists = [self._keys.list_key(queue, step) for step in steps for queue in ordered]
        first_tag = self._next_tag
        self._next_tag += limit  # reserved until the reply says how many were used
        try:
            reply = consumer.wire.script(
                consumer.scripts.fetch,
                keys=[
                    self._keys.held_key(self._holder),
                    self._keys.alive_key(self._holder),
                    self._keys.holders_key,
                    *lists,
                ],
                args=[limit, first_tag, int(self._holder_expires * 1000), self._holder, *acks],
            )
        except RETRYABLE:
            # The script may have run: whatever it took is in our hash under these tags.
            self._orphaned.append(range(first_tag, first_tag + limit))
            raise
        decode = envelope_codec.decode
        deliveries = []
        undecodable: list[tuple[int, bytes, str]] = []
        for index in range(0, len(reply), 2):
            tag = first_tag + index // 2
            queue = owners[reply[index] - 1]
            try:
                envelope, redelivered = decode(reply[index + 1], limits=self._limits)
            except Exception as exc:  # RecursionError and MemoryError too: this message only
                undecodable.append((tag, reply[index + 1], queue))
                log_dead_letter(f"at position {index // 2} of a fetch", queue, exc)
                continue
            deliveries.append(Delivery(envelope, tag, queue, redelivered))
        self._next_tag = first_tag + len(reply) // 2
        if undecodable:
            self._dead_letter_raw(undecodable)
        return deliveries

    def _dead_letter_raw(self, entries: Sequence[tuple[int, bytes, str]]) -> None:
        """Move held entries that do not decode, as they are, to their dead-letter lists."""
        commands: list[tuple[Arg, ...]] = [
            ("LPUSH", self._keys.list_key(dead_letter_queue(queue), 0), raw)
            for _, raw, queue in entries
        ]
        commands.append(("HDEL", self._keys.held_key(self._holder), *(t for t, _, _ in entries)))
        self._commands().pipeline(commands)

    def _ordered(self, queues: Sequence[str]) -> list[str]:
        if self._queue_order == "sorted":
            return sorted(queues)
        if self._queue_order == "priority" or len(queues) < 2:
            return list(queues)
        self._rotation = (self._rotation + 1) % len(queues)
        return [*queues[self._rotation :], *queues[: self._rotation]]

    def _requeue_orphans(self, consumer: _Consumer) -> None:
        tags = [tag for span in self._orphaned for tag in span]
        requeue_held(consumer.client, consumer.scripts, self._keys, self._holder, tags)
        self._orphaned.clear()

    # -- ack, reject, size, purge ------------------------------------------------------------

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        tags = [delivery.tag for delivery in deliveries if type(delivery.tag) is int]
        if tags:
            held = self._keys.held_key(self._holder)
            self._call("ack", lambda: self._commands().call("HDEL", held, *tags))

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        dead_letter_by_publishing(self, items)

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        if not requeue:
            self.ack(deliveries)
            return
        tags = [delivery.tag for delivery in deliveries if type(delivery.tag) is int]
        if tags:
            self._call(
                "reject",
                lambda: requeue_held(self._client, self._scripts, self._keys, self._holder, tags),
            )
        fanout = [delivery for delivery in deliveries if _is_fanout_tag(delivery.tag)]
        if fanout and self._consumer is not None:
            # A broadcast copy lives only here: put it back in this consumer's buffer.
            for delivery in fanout:
                data = envelope_codec.mark_redelivered(self._encoder(delivery.envelope))
                self._consumer.doorbell.buffers[delivery.queue].appendleft(data)

    def size(self, queue: str) -> int:
        buffered = self._buffered(queue)
        if buffered is not None:
            return len(buffered)

        def count() -> int:
            pipe = self._client.pipeline(transaction=False)
            for list_key in self._keys.list_keys(queue):
                pipe.llen(list_key)
            return sum(pipe.execute())

        return self._call("size", count)

    def purge(self, queue: str) -> int:
        buffered = self._buffered(queue)
        if buffered is not None:
            count = len(buffered)
            buffered.clear()
            return count

        def drop() -> int:
            list_keys = self._keys.list_keys(queue)
            pipe = self._client.pipeline(transaction=True)
            for list_key in list_keys:
                pipe.llen(list_key)
            pipe.delete(*list_keys)
            return sum(pipe.execute()[:-1])

        return self._call("purge", drop)

    def _buffered(self, queue: str) -> collections.deque[bytes] | None:
        if queue in self._fanout_queues and self._consumer is not None:
            self._consumer.doorbell.drain()
            return self._consumer.doorbell.buffers.get(queue)
        return None

    # -- lifecycle -----------------------------------------------------------------------

    def on_void(self, callback: Callable[[], None]) -> None:
        pass  # reserved messages stay with their holder across reconnects

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:
            # A forked copy: the parent still holds these messages and owns the keys.
            return
        if self._heartbeat is not None:
            self._heartbeat.stop()
            try:
                release_holder(self._client, self._scripts, self._keys, self._holder)
            except RETRYABLE as exc:
                logger.warning(
                    "Redis: could not return held messages on close (%s); other consumers "
                    "will once this one's heartbeat expires (%.0f s)",
                    exc,
                    self._holder_expires,
                )
        if self._auto_delete:
            with contextlib.suppress(*RETRYABLE):  # best effort, as the queues are temporary
                self._delete_auto_delete_queues()
        self._drop_consumer()
        self._pool.disconnect()

    def _delete_auto_delete_queues(self) -> None:
        """Drop the queues declared auto-delete here, and their bindings (kombu does too)."""
        pipe = self._client.pipeline(transaction=False)
        for queue, bindings in self._auto_delete.items():
            pipe.delete(*self._keys.list_keys(queue))
            for exchange, member in bindings:
                pipe.srem(self._keys.bindings_key(exchange), member)
                pipe.srem(self._keys.permanent_bindings_key(exchange), member)
        pipe.execute()

    def _consuming(self) -> _Consumer:
        """The consumer side, created on first use (or again after a lost connection)."""
        if self._consumer is None:
            self._consumer = _Consumer(self)
            for queue, patterns in self._fanout_queues.items():
                for pattern in patterns:
                    self._consumer.doorbell.subscribe_fanout(pattern, queue)
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(
                self,
                self._client,
                self._scripts,
                self._keys,
                self._holder,
                interval=self._heartbeat_interval,
                expires=self._holder_expires,
                check_interval=self._check_interval,
            )
            self._heartbeat.start()
        return self._consumer

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        options = self.options
        return call_with_retry(
            operation,
            what=what,
            where=f"Redis at {safe_url(self.url)}",
            max_retries=options.connection_max_retries if options.connection_retry else 0,
            max_delay=_MAX_RETRY_DELAY,
            reset=self._reset,
            logger=logger,
        )

    def _reset(self) -> None:
        """After a lost connection: start again from fresh connections."""
        self._drop_consumer()
        self._pool.disconnect()  # the publish wire too: it reconnects on its next command


def _is_fanout_tag(tag: Hashable) -> bool:
    return isinstance(tag, tuple) and len(tag) == 2 and tag[0] == "fanout"
