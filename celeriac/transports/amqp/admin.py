"""Queues and exchanges, on the admin channel: declare, make sure a queue exists, purge, size.

A failed declare makes the broker close the channel it came on; on a channel of its own
that never takes the consumers' unacked messages or the unconfirmed publishes down with it.
The admin channel is reopened at once and the error re-raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pika import spec

from celeriac.exceptions import OperationalError
from celeriac.transports.amqp.connection import AMQPConnection, ChannelError
from celeriac.wire.queues import QueueSpec

logger = logging.getLogger("celeriac.transports.amqp")

NOT_FOUND = 404
PRECONDITION_FAILED = 406


class AdminChannel:
    """Declares queues and remembers them, so that a new connection declares them again."""

    def __init__(self) -> None:
        self.channel = 0
        self._specs: dict[str, QueueSpec] = {}
        #: Queues known to exist on the current connection: not checked again.
        self._existing: set[str] = set()

    def open(self, conn: AMQPConnection) -> None:
        self.channel = conn.open_channel()

    def remember(self, queues: Sequence[QueueSpec]) -> None:
        for queue in queues:
            self._specs[queue.name] = queue

    def declare_again(self, conn: AMQPConnection) -> None:
        if self._specs:
            self.declare(conn, list(self._specs.values()))

    def forget_connection(self) -> None:
        """Exclusive and auto-delete queues die with the connection."""
        specs = self._specs
        self._existing = {
            name
            for name in self._existing
            if name not in specs or not (specs[name].exclusive or specs[name].auto_delete)
        }

    def forget_queue(self, name: str) -> None:
        """``name`` may be gone (its consumer was cancelled by the broker)."""
        self._existing.discard(name)

    def declare(self, conn: AMQPConnection, queues: Sequence[QueueSpec]) -> None:
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
                self._rpc(conn, method, spec.Queue.DeclareOk)
                if queue.exchange:
                    bind = spec.Queue.Bind(
                        queue=queue.name, exchange=queue.exchange, routing_key=queue.binding_key
                    )
                    self._rpc(conn, bind, spec.Queue.BindOk)
            except ChannelError as exc:
                raise OperationalError(f"declaring queue {queue.name!r} failed: {exc}") from exc
            self._existing.add(queue.name)

    def _declare_exchange(self, conn: AMQPConnection, queue: QueueSpec) -> None:
        method = spec.Exchange.Declare(
            exchange=queue.exchange, type=queue.exchange_type, durable=queue.durable
        )
        try:
            self._rpc(conn, method, spec.Exchange.DeclareOk)
        except ChannelError as exc:
            # Declared before with other flags (e.g. durable by a Celery app): it exists,
            # which is all binding needs. Anything else is an error.
            if exc.reply_code != PRECONDITION_FAILED:
                raise OperationalError(
                    f"declaring exchange {queue.exchange!r} failed: {exc}"
                ) from exc
            logger.debug("exchange %r exists with other flags: %s", queue.exchange, exc)

    def ensure(self, conn: AMQPConnection, name: str) -> None:
        """Queues come into being when first published to or consumed from."""
        if name in self._existing or not name or name.startswith("amq."):
            return
        queue_spec = self._specs.get(name)
        if queue_spec is not None:
            self.declare(conn, [queue_spec])
            return
        try:
            self._rpc(conn, spec.Queue.Declare(queue=name, passive=True), spec.Queue.DeclareOk)
        except ChannelError as exc:
            if exc.reply_code != NOT_FOUND:
                raise OperationalError(f"checking queue {name!r} failed: {exc}") from exc
            self.declare(conn, [QueueSpec(name)])
        self._existing.add(name)

    def purge(self, conn: AMQPConnection, queue: str, channel: int | None = None) -> int:
        """Purge ``queue`` on the admin channel, or on ``channel`` (to keep order with
        what was sent there before)."""
        method = spec.Queue.Purge(queue=queue)
        return self._message_count(
            conn, method, spec.Queue.PurgeOk, f"purging queue {queue!r}", channel
        )

    def size(self, conn: AMQPConnection, queue: str) -> int:
        method = spec.Queue.Declare(queue=queue, passive=True)
        return self._message_count(conn, method, spec.Queue.DeclareOk, f"sizing queue {queue!r}")

    def _message_count(
        self,
        conn: AMQPConnection,
        method: Any,
        expected: type,
        doing: str,
        channel: int | None = None,
    ) -> int:
        """The message count the reply to ``method`` gives; 0 for a queue that does not exist."""
        try:
            if channel is None:
                reply = self._rpc(conn, method, expected)
            else:
                reply = conn.rpc(channel, method, expected)
        except ChannelError as exc:
            if exc.reply_code == NOT_FOUND:
                return 0
            raise OperationalError(f"{doing} failed: {exc}") from exc
        return int(reply.message_count)

    def _rpc(self, conn: AMQPConnection, method: Any, expected: type) -> Any:
        """An RPC on the admin channel; a channel error reopens the channel and is re-raised."""
        try:
            return conn.rpc(self.channel, method, expected)
        except ChannelError:
            conn.discard_channel(self.channel)
            self.channel = conn.open_channel()
            raise
