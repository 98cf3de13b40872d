"""``rpc://``: results come back as messages, to a queue of the client that sent the task.

Celery's RPC backend, on any celeriac broker (SQLite, Redis, RabbitMQ, in-process memory).
The worker publishes each meta to the default exchange with routing key = the request's
``reply_to`` (the sending app's ``oid``) and ``correlation_id`` = the task id; the client
takes the messages off its reply queue (named by its oid: auto-delete, ``x-expires`` =
``result_expires``) and keeps the latest meta of each task. So:

* only the client that sent a task reads its result, and the broker holds it only until
  then: once read, the meta lives in that process (a SUCCESS is never replaced, as in
  every backend; other states give way to later ones);
* a meta without ``reply_to`` has nobody to go to and is dropped, as in Celery;
* groups cannot be saved and chords cannot join, as in Celery: those need a result store.

The broker connection comes from ``transport_factory`` (the app's ``create_transport``),
because backends do not import the transports; what this backend needs of it is
:class:`~celeriac.wire.queues.BrokerConnection`. A process uses two
connections at most: one to publish replies (workers) and one to read them (clients).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, cast

from celeriac import states
from celeriac.backends.base import (
    BackendCapabilities,
    BackendOptions,
    ChordMember,
    ResultBackend,
)
from celeriac.backends.kv import may_overwrite
from celeriac.exceptions import ImproperlyConfigured, InvalidMessageError, TimeoutError
from celeriac.protocol import compression, serializers
from celeriac.protocol.message import Envelope
from celeriac.protocol.results import Meta, loads_result
from celeriac.wire.queues import BrokerConnection, QueueSpec

logger = logging.getLogger("celeriac.backends.rpc")

NO_BROKER_MESSAGE = (
    "The rpc:// result backend sends results through the broker, so it is made by an app "
    "(app.backend), which passes its broker connection as transport_factory."
)
NO_GROUPS_MESSAGE = (
    "The rpc:// result backend cannot store groups (as in Celery): use a result store such "
    "as redis:// or db+sqlite:// to save and restore GroupResults."
)
NO_CHORDS_MESSAGE = (
    "The rpc:// result backend does not support chords (as in Celery); a group chained "
    "with a task is a chord too. Use a result store such as redis:// or db+sqlite://."
)

#: Replies taken per fetch, and fetches per read at most (a read returns after that many).
_FETCH_BATCH = 1000
_FETCH_ROUNDS = 20
#: Longest single wait on the broker; a longer ``wait`` goes on after it.
_WAIT_SLICE = 5.0
#: Ready metas already returned to a caller, kept for later reads of the same task.
_KEPT_AFTER_READ = 10_000
#: Reply queues a connection remembers having declared (one per client a worker answers).
_DECLARED_KEPT = 10_000
#: Celery's RPC results are transient messages (``result_persistent`` is off by default).
_TRANSIENT = 1


def _reply_queue(name: str, arguments: Mapping[str, Any]) -> QueueSpec:
    """A client's reply queue: durable and auto-delete as Celery 5.7 declares it, so either
    side can declare it first."""
    return QueueSpec(name, durable=True, auto_delete=True, arguments=arguments)


class _Link:
    """One broker connection of this process, opened on first use and after a failure."""

    def __init__(self, factory: Callable[[], BrokerConnection]) -> None:
        self._factory = factory
        self._transport: BrokerConnection | None = None
        self._pid = 0
        #: Reply queues declared on this connection.
        self.declared: set[str] = set()

    def get(self) -> BrokerConnection:
        if self._transport is None or self._pid != os.getpid():
            self._transport = self._factory()
            self._pid = os.getpid()
            self.declared = set()
        return self._transport

    def declare(self, queue: QueueSpec) -> None:
        """Declare the queue once per connection; one that exists otherwise is kept as is."""
        if queue.name in self.declared:
            return
        transport = self.get()
        try:
            transport.declare([queue])
        except Exception as exc:
            # It exists with other arguments (declared by another Celery version or with
            # another result_expires): still usable, so publish and read anyway.
            logger.warning("Cannot declare reply queue %s: %s", queue.name, exc)
        if len(self.declared) >= _DECLARED_KEPT:
            self.declared.clear()
        self.declared.add(queue.name)

    def drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):  # already broken: closing is best effort
                transport.close()


class RPCBackend(ResultBackend):
    capabilities = BackendCapabilities(
        enabled=True, cross_process=True, needs_reply_to=True, chords=False
    )

    def __init__(
        self,
        url: str = "rpc://",
        options: BackendOptions | None = None,
        *,
        transport_factory: Callable[[], BrokerConnection] | None = None,
        oid: str | None = None,
    ) -> None:
        """A backend on the broker that ``transport_factory`` connects to.

        Args:
            transport_factory: Opens a broker connection (the app's ``create_transport``).
            oid: This client's id (the app's ``oid``, sent as every task message's
                ``reply_to``): the name of the queue replies come to; a new one if None.
        """
        options = options or BackendOptions()
        if transport_factory is None:
            raise ImproperlyConfigured(NO_BROKER_MESSAGE)
        self.url = url
        self.options = options
        #: The client id whose queue this backend reads.
        self.oid = oid or str(uuid.uuid4())
        serializer = serializers.get(options.serializer)
        self._dumps = serializer.dumps
        self._content_type = serializer.content_type
        self._content_encoding = serializer.content_encoding
        self._accept = options.accept
        expires = options.expires
        self._queue_arguments = {"x-expires": max(1, int(expires * 1000))} if expires else {}
        self.reply_queue = _reply_queue(self.oid, self._queue_arguments)
        self._producer = _Link(transport_factory)
        self._producer_lock = threading.Lock()
        self._consumer = _Link(transport_factory)
        # Guards the metas below and who reads the broker. Not reentrant: ``_drain``
        # releases it once around the broker call.
        self._changed = threading.Condition(threading.Lock())
        self._draining = False
        #: Latest meta per task, not yet returned in a ready state.
        self._unread: dict[str, Meta] = {}
        #: Ready metas already returned, oldest first.
        self._read: OrderedDict[str, Meta] = OrderedDict()

    # -- the worker's side -------------------------------------------------------------

    def store(self, metas: Sequence[Meta]) -> None:
        """Send each meta to the reply queue its ``reply_to`` names, in one publish."""
        replies = [self._reply(meta) for meta in metas if meta.get("reply_to")]
        if not replies:
            return
        with self._producer_lock:
            link = self._producer
            try:
                # The client declares its queue before sending tasks; declaring it here too
                # (once per client) means a queue gone with its client comes back with an
                # expiry, not as a plain queue that would stay forever (RabbitMQ).
                for name in {reply.routing_key for reply in replies} - link.declared:
                    link.declare(_reply_queue(name, self._queue_arguments))
                link.get().publish(replies)
            except Exception:
                link.drop()
                raise

    def _reply(self, meta: Meta) -> Envelope:
        payload = meta.copy()
        reply_to = payload.pop("reply_to")
        properties = {
            "correlation_id": payload["task_id"],
            "delivery_mode": _TRANSIENT,
            "priority": 0,
        }
        return Envelope(
            self._dumps(payload),
            {},
            properties,
            self._content_type,
            self._content_encoding,
            exchange="",
            routing_key=reply_to,
        )

    # -- the client's side -------------------------------------------------------------

    def declare_reply_queue(self) -> None:
        """Create this client's reply queue unless it exists; called before sending tasks.

        RabbitMQ drops a reply routed to a queue that does not exist, so the queue has to be
        there before any worker replies (Celery's ``on_task_call`` declares it too).
        """
        with self._changed:
            if self._draining:  # the reading thread has declared it
                return
            self._draining = True
        try:
            self._reader()
        finally:
            with self._changed:
                self._draining = False
                self._changed.notify_all()

    def get(self, task_ids: Sequence[str]) -> list[Meta | None]:
        if not task_ids:
            return []
        with self._changed:
            self._drain(0.0)
            return [_copy(self._take(task_id)) for task_id in task_ids]

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        """Block on the reply queue (no polling) until every id has a ready state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = list(dict.fromkeys(task_ids))
        with self._changed:
            self._drain(0.0)
            while True:
                pending = [task_id for task_id in pending if not self._is_ready(task_id)]
                if not pending:  # every meta is there now
                    taken = [self._take(task_id) for task_id in task_ids]
                    return [meta.copy() for meta in taken if meta is not None]
                slice_ = _WAIT_SLICE
                if deadline is not None:
                    slice_ = min(slice_, deadline - time.monotonic())
                    if slice_ <= 0:
                        raise TimeoutError(
                            f"The operation timed out after {timeout:g} s: {len(pending)} of "
                            f"{len(set(task_ids))} results not ready"
                        )
                self._drain(slice_)

    def forget(self, task_ids: Sequence[str]) -> None:
        """Drop the metas this client holds, taking the replies that arrived off the broker."""
        with self._changed:
            self._drain(0.0)
            for task_id in task_ids:
                self._unread.pop(task_id, None)
                self._read.pop(task_id, None)

    # -- reading the reply queue -------------------------------------------------------

    def _drain(self, timeout: float) -> None:
        """Take the replies that arrived, waiting up to ``timeout`` seconds for one.

        Called with ``_changed`` held. One thread at a time reads the broker, with the lock
        released meanwhile; the others wait for it to announce what it took (or, with no
        timeout, go on with what is known).
        """
        if self._draining:
            if timeout > 0:
                self._changed.wait(timeout)
            return
        self._draining = True
        self._changed.release()
        try:
            received, error = self._receive(timeout)
        finally:
            self._changed.acquire()
            self._draining = False
        for task_id, meta in received:
            self._keep(task_id, meta)
        self._changed.notify_all()
        if error is not None:
            raise error

    def _reader(self) -> BrokerConnection:
        """The reading connection, with the reply queue declared on it."""
        self._consumer.declare(self.reply_queue)
        return self._consumer.get()

    def _receive(self, timeout: float) -> tuple[list[tuple[str, Meta]], Exception | None]:
        """Fetch, decode and ack replies; the broker is only called here (lock released).

        Returns what was taken and the first error: a reply that cannot be decoded is
        dropped and reported after the others are kept; a broken connection is reported
        after what arrived before it is kept.
        """
        received: list[tuple[str, Meta]] = []
        error: Exception | None = None
        try:
            transport = self._reader()
            for _ in range(_FETCH_ROUNDS):
                deliveries = transport.fetch([self.oid], _FETCH_BATCH, timeout)
                for delivery in deliveries:
                    try:
                        received.append(self._decode(delivery.envelope))
                    except Exception as exc:
                        error = error or exc
                if deliveries:
                    transport.ack(deliveries)
                if len(deliveries) < _FETCH_BATCH:
                    break
                timeout = 0.0  # take what is there, do not wait for more
        except Exception as exc:
            self._consumer.drop()
            error = exc
        return received, error

    def _decode(self, envelope: Envelope) -> tuple[str, Meta]:
        body = envelope.body
        compressed_with = envelope.headers.get("compression") if envelope.headers else None
        if compressed_with:
            body = compression.decompress(body, compressed_with)
        decoded = loads_result(body, envelope.content_type, self._accept)
        if not isinstance(decoded, dict):
            raise InvalidMessageError(f"reply is not a result meta: {type(decoded).__name__}")
        meta = cast(Meta, decoded)  # a peer's meta, read as Celery's format
        # The property first, as Celery reads it; very old peers only had the field.
        task_id = envelope.properties.get("correlation_id") or meta.get("task_id")
        if not task_id:
            raise InvalidMessageError("reply without correlation_id or task_id")
        return str(task_id), meta

    # -- the metas this client holds ---------------------------------------------------

    def _keep(self, task_id: str, meta: Meta) -> None:
        current = self._unread.get(task_id) or self._read.get(task_id)
        if current is not None and not may_overwrite(current.get("status")):
            return  # a duplicate delivery after SUCCESS
        self._read.pop(task_id, None)
        self._unread[task_id] = meta

    def _is_ready(self, task_id: str) -> bool:
        meta = self._unread.get(task_id) or self._read.get(task_id)
        return meta is not None and meta.get("status") in states.READY_STATES

    def _take(self, task_id: str) -> Meta | None:
        """The meta of a task; a ready one moves to the bounded store of returned metas."""
        meta = self._unread.get(task_id)
        if meta is None:
            return self._read.get(task_id)
        if meta.get("status") in states.READY_STATES:
            del self._unread[task_id]
            self._read[task_id] = meta
            if len(self._read) > _KEPT_AFTER_READ:
                self._read.popitem(last=False)
        return meta

    # -- what RPC results cannot do (as in Celery) ---------------------------------------

    def save_group(self, group_id: str, value: Any) -> None:
        _refuse(NO_GROUPS_MESSAGE)

    def get_group(self, group_id: str) -> Any | None:
        _refuse(NO_GROUPS_MESSAGE)

    def forget_group(self, group_id: str) -> None:
        _refuse(NO_GROUPS_MESSAGE)

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        _refuse(NO_CHORDS_MESSAGE)

    def close(self) -> None:
        with self._producer_lock:
            self._producer.drop()
        with self._changed:
            while self._draining:  # another thread is reading: let it finish
                self._changed.wait()
            self._consumer.drop()


def _copy(meta: Meta | None) -> Meta | None:
    # Callers may change what they get; the held meta must stay as it arrived.
    return None if meta is None else meta.copy()


def _refuse(message: str) -> NoReturn:
    raise NotImplementedError(message)
