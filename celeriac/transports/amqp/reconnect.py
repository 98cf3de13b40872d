"""Staying connected: failover between brokers with backoff, and restoring a new connection.

Any operation that finds the connection lost reconnects, declares again what was declared,
consumes again, and republishes messages whose confirms had not arrived. Deliveries
received on the lost connection are void (the broker has requeued them): settling them is
a no-op.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from celeriac.exceptions import OperationalError
from celeriac.transports.amqp.admin import AdminChannel
from celeriac.transports.amqp.connection import (
    AMQPConnection,
    ChannelError,
    ConnectionLost,
    ConnectionParams,
    FrameListener,
)
from celeriac.transports.amqp.consuming import ConsumeChannel
from celeriac.transports.amqp.publishing import PublishChannel
from celeriac.transports.base import TransportOptions

logger = logging.getLogger("celeriac.transports.amqp")

T = TypeVar("T")


class Reconnector:
    """Holds the connection of one transport and its three channels, and replaces it when lost.

    ``;``-separated broker URLs are tried in turn. Retries follow the
    ``broker_connection_*`` settings and the ``interval_*``/``max_retries`` transport options.
    """

    def __init__(
        self,
        brokers: list[ConnectionParams],
        options: TransportOptions,
        listener: FrameListener,
        channels: tuple[ConsumeChannel, PublishChannel, AdminChannel],
    ) -> None:
        extra = options.transport_options
        self._brokers = brokers
        self._retry = bool(options.connection_retry)
        self._interval_start = float(extra.get("interval_start", 0.0))
        self._interval_step = float(extra.get("interval_step", 0.5))
        self._interval_max = float(extra.get("interval_max", 5.0))
        max_retries = extra.get("max_retries", options.connection_max_retries)
        self._max_retries: int | None = None if max_retries is None else int(max_retries)
        self._listener = listener
        self._consuming, self._publishing, self._admin = channels
        self._pid = os.getpid()
        self._was_lost = False
        #: The connection; None before the first operation and once lost or closed.
        self.conn: AMQPConnection | None = None

    def detach(self) -> AMQPConnection | None:
        """Hand the connection over, to be closed: None when there is none, or in a forked
        child (the socket belongs to the parent process: leave it alone)."""
        conn, self.conn = self.conn, None
        return None if os.getpid() != self._pid else conn

    def run(self, operation: Callable[[AMQPConnection], T]) -> T:
        """Run ``operation`` on an open connection, reconnecting when it is lost."""
        losses = 0
        while True:
            conn = self._connection()
            try:
                return operation(conn)
            except ConnectionLost as exc:
                self.lost()
                losses += 1
                if not self._may_retry(exc, losses):
                    raise OperationalError(f"broker connection lost: {exc}") from exc
                logger.warning("lost the broker connection (%s); reconnecting", exc)

    def lost(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.forget_connection()

    def forget_connection(self) -> None:
        """What lived on the connection goes with it (declarations and unconfirmed
        messages stay, to be restored on the next one)."""
        self._was_lost = True
        self._consuming.forget_connection()
        self._admin.forget_connection()

    def _may_retry(self, exc: ConnectionLost, attempts: int) -> bool:
        return (
            exc.retryable
            and self._retry
            and (self._max_retries is None or attempts <= self._max_retries)
        )

    def _connection(self) -> AMQPConnection:
        if self.conn is not None:
            if self.conn.is_open:
                return self.conn
            self.lost()
        if os.getpid() != self._pid:
            raise OperationalError("AMQPTransport used after fork: create one per process")
        attempt = 0
        while True:
            broker = self._brokers[attempt % len(self._brokers)]
            try:
                return self._connect(broker)
            except ConnectionLost as exc:
                attempt += 1
                if not self._may_retry(exc, attempt):
                    raise OperationalError(str(exc)) from exc
                self._wait_before_retry(broker, exc, attempt)

    def _wait_before_retry(
        self, broker: ConnectionParams, exc: ConnectionLost, attempt: int
    ) -> None:
        delay = min(self._interval_start + self._interval_step * (attempt - 1), self._interval_max)
        limit = "∞" if self._max_retries is None else self._max_retries
        where = broker.describe()
        reason = str(exc) if where in str(exc) else f"{where}: {exc}"
        logger.warning("%s; retry %d/%s in %.1fs", reason, attempt, limit, delay)
        time.sleep(delay)

    def _connect(self, broker: ConnectionParams) -> AMQPConnection:
        conn = AMQPConnection(broker, self._listener)
        conn.open()
        try:
            self._consuming.open(conn)
            self._publishing.open(conn)
            self._admin.open(conn)
            self.conn = conn
            self._restore(conn)
        except (ChannelError, OperationalError) as exc:
            conn.close()
            self.conn = None
            self.forget_connection()
            raise OperationalError(f"setting up {broker.describe()} failed: {exc}") from exc
        except ConnectionLost:
            self.conn = None
            self.forget_connection()
            raise
        if self._was_lost:
            logger.info("reconnected to %s", broker.describe())
        return conn

    def _restore(self, conn: AMQPConnection) -> None:
        """On a new connection: declarations, consumers, then unconfirmed messages."""
        self._admin.declare_again(conn)
        self._consuming.consume_again(conn)
        self._publishing.republish(conn)
