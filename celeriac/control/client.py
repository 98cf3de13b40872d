"""``app.control`` and ``app.control.inspect()``: Celery's remote-control client.

Method names, arguments and return values are those of ``celery.app.control``, and the
requests are the ones a Celery worker answers, so a celeriac client controls Celery
workers as well as celeriac ones (and a Celery client celeriac workers).

Return values: a control command returns ``None``, or with ``reply=True`` the list of
replies, one ``{nodename: reply}`` mapping per node that answered within ``timeout``. An
inspect command returns one mapping of all replies, ``{nodename: reply}``, or ``None``
when no node answered.

Two broker details, as the transports declare exchanges only together with a queue: on
RabbitMQ the broadcast exchange exists once a worker (Celery's or celeriac's) has
declared its queue, so a broadcast on a broker no worker ever used fails with the
broker's 404 (Celery's client declares the exchange itself). On Redis a
``control_exchange`` other than ``celery`` is known to be fanout once a celeriac node
declared it; with Celery workers only, list ``<control_exchange>.pidbox`` in
``broker_transport_options["fanout_exchanges"]``.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict, Unpack

from celeriac.control.clock import LamportClock
from celeriac.control.mailbox import Broadcaster, Mailbox, NodeReply, ReplyBody, name_matches
from celeriac.exceptions import DuplicateNodenameWarning
from celeriac.protocol.limits import Limits
from celeriac.transports.base import Transport

#: The signal ``revoke(terminate=True)`` sends by default.
TERM_SIGNAME = "SIGTERM"

ReplyCallback = Callable[[ReplyBody], object]


class PingOptions(TypedDict, total=False):
    """How a command that always waits for replies is sent (see :meth:`Control.broadcast`)."""

    connection: Transport | None
    limit: int | None
    callback: ReplyCallback | None
    pattern: str | None
    matcher: str | None


class BroadcastOptions(PingOptions, total=False):
    """How a command is sent (see :meth:`Control.broadcast`)."""

    reply: bool
    timeout: float | None


class ControlApp(Protocol):
    """What the client needs of its app (``celeriac.Celery`` has it)."""

    @property
    def conf(self) -> Mapping[str, Any]: ...

    def create_transport(
        self, url: str | None = None, *, connection_retry: bool | None = None
    ) -> Transport: ...

    def limits(self) -> Limits: ...


def flatten_reply(replies: Sequence[ReplyBody]) -> dict[str, NodeReply]:
    """``[{node: reply}, …]`` as one ``{node: reply, …}``; warns of a node name heard twice
    (two workers started with one ``-n`` name: only the last reply is kept)."""
    by_node: dict[str, NodeReply] = {}
    twice: set[str] = set()
    for reply in replies:
        twice.update(name for name in reply if name in by_node)
        by_node.update(reply)
    if twice:
        warnings.warn(
            DuplicateNodenameWarning(
                f"Received multiple replies from node name(s) {', '.join(sorted(twice))}: "
                "give each worker a unique node name (celeriac worker -n)."
            ),
            stacklevel=3,
        )
    return by_node


class Control:
    """Send commands to workers (``app.control``)."""

    def __init__(self, app: ControlApp, clock: LamportClock | None = None) -> None:
        self.app = app
        self.mailbox = Mailbox.from_settings(app.conf, app.limits())
        self.clock = clock or LamportClock()
        self._local = threading.local()

    def inspect(
        self,
        destination: Sequence[str] | None = None,
        timeout: float = 1.0,
        callback: ReplyCallback | None = None,
        connection: Transport | None = None,
        limit: int | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
    ) -> Inspect:
        """Commands that ask workers about their state (``app.control.inspect()``)."""
        return Inspect(self, destination, timeout, callback, connection, limit, pattern, matcher)

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        destination: Sequence[str] | None = None,
        connection: Transport | None = None,
        reply: bool = False,
        timeout: float | None = 1.0,
        limit: int | None = None,
        callback: ReplyCallback | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        **extra_arguments: object,
    ) -> list[ReplyBody] | None:
        """Send ``command`` to the workers named by ``destination`` (all when ``None``), or
        to those whose name ``pattern`` matches (``matcher``: ``glob`` or ``pcre``).

        With ``reply``, wait up to ``timeout`` seconds or until ``limit`` replies came (by
        default one per ``destination`` name) and return them; ``callback`` is called with
        each. ``connection``: a transport to send on instead of this thread's own.
        Keyword arguments beyond these are arguments of the command.
        """
        arguments = dict(arguments or {}, **extra_arguments)
        return self._broadcaster(connection).broadcast(
            command, arguments, destination, pattern, matcher, reply, timeout, limit, callback
        )

    def _broadcaster(self, connection: Transport | None) -> Broadcaster:
        """This thread's broadcaster (a new one after fork), or one on ``connection`` with
        this thread's reply queue."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            local.pid, local.caller_id, local.broadcaster = os.getpid(), str(uuid.uuid4()), None
        if connection is not None:
            return Broadcaster(self.mailbox, connection, self.clock, local.caller_id)
        if local.broadcaster is None:
            # Errors reach the caller at once: a command is not worth minutes of retries.
            transport = self.app.create_transport(connection_retry=False)
            local.broadcaster = Broadcaster(self.mailbox, transport, self.clock, local.caller_id)
        broadcaster: Broadcaster = local.broadcaster
        return broadcaster

    def close(self) -> None:
        """Close this thread's broker connection (made again on next use)."""
        local = self._local
        broadcaster = getattr(local, "broadcaster", None)
        if broadcaster is not None and local.pid == os.getpid():
            broadcaster.transport.close()
        self._local = threading.local()

    # -- commands ----------------------------------------------------------------------

    def ping(
        self,
        destination: Sequence[str] | None = None,
        timeout: float = 1.0,
        **kwargs: Unpack[PingOptions],
    ) -> list[ReplyBody] | None:
        """Ask the workers to answer: ``[{"w1@host": {"ok": "pong"}}, …]``."""
        return self.broadcast(
            "ping", reply=True, destination=destination, timeout=timeout, **kwargs
        )

    def revoke(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        terminate: bool = False,
        signal: str = TERM_SIGNAME,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Tell the workers to discard the task(s); ``terminate`` a running one by ``signal``."""
        arguments = {"task_id": task_id, "terminate": terminate, "signal": signal}
        return self.broadcast("revoke", arguments, destination, **kwargs)

    def terminate(
        self,
        task_id: str | Sequence[str],
        destination: Sequence[str] | None = None,
        signal: str = TERM_SIGNAME,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Revoke the task(s) and stop them where they run."""
        return self.revoke(task_id, destination, terminate=True, signal=signal, **kwargs)

    def rate_limit(
        self,
        task_name: str,
        rate_limit: str | int | float | None,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Set a task type's rate limit (``"10/m"``; ``None`` or 0: none)."""
        arguments = {"task_name": task_name, "rate_limit": rate_limit}
        return self.broadcast("rate_limit", arguments, destination, **kwargs)

    def time_limit(
        self,
        task_name: str,
        soft: float | None = None,
        hard: float | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Set a task type's soft and hard time limits, in seconds."""
        arguments = {"task_name": task_name, "hard": hard, "soft": soft}
        return self.broadcast("time_limit", arguments, destination, **kwargs)

    def add_consumer(
        self,
        queue: str,
        exchange: str | None = None,
        exchange_type: str = "direct",
        routing_key: str | None = None,
        options: Mapping[str, object] | None = None,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Make the workers consume from ``queue`` too (``options``: more queue arguments)."""
        arguments = {
            "queue": queue,
            "exchange": exchange,
            "exchange_type": exchange_type,
            "routing_key": routing_key,
            **(options or {}),
        }
        return self.broadcast("add_consumer", arguments, destination, **kwargs)

    def cancel_consumer(
        self,
        queue: str,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Make the workers stop consuming from ``queue``."""
        return self.broadcast("cancel_consumer", {"queue": queue}, destination, **kwargs)

    def enable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Unpack[BroadcastOptions]
    ) -> list[ReplyBody] | None:
        """Make the workers send task events."""
        return self.broadcast("enable_events", {}, destination, **kwargs)

    def disable_events(
        self, destination: Sequence[str] | None = None, **kwargs: Unpack[BroadcastOptions]
    ) -> list[ReplyBody] | None:
        """Make the workers stop sending task events."""
        return self.broadcast("disable_events", {}, destination, **kwargs)

    def pool_grow(
        self,
        n: int = 1,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Add ``n`` processes (or threads) to the workers' pools."""
        return self.broadcast("pool_grow", {"n": n}, destination, **kwargs)

    def pool_shrink(
        self,
        n: int = 1,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Remove ``n`` processes (or threads) from the workers' pools."""
        return self.broadcast("pool_shrink", {"n": n}, destination, **kwargs)

    def autoscale(
        self,
        max: int,
        min: int,
        destination: Sequence[str] | None = None,
        **kwargs: Unpack[BroadcastOptions],
    ) -> list[ReplyBody] | None:
        """Set the workers' autoscaling bounds."""
        return self.broadcast("autoscale", {"max": max, "min": min}, destination, **kwargs)

    def shutdown(
        self, destination: Sequence[str] | None = None, **kwargs: Unpack[BroadcastOptions]
    ) -> list[ReplyBody] | None:
        """Stop the workers (warm shutdown); they do not reply."""
        return self.broadcast("shutdown", {}, destination, **kwargs)

    def heartbeat(
        self, destination: Sequence[str] | None = None, **kwargs: Unpack[BroadcastOptions]
    ) -> list[ReplyBody] | None:
        """Make the workers send a heartbeat event now."""
        return self.broadcast("heartbeat", {}, destination, **kwargs)

    def election(
        self,
        id: str,
        topic: str,
        action: str | None = None,
        connection: Transport | None = None,
    ) -> None:
        """Hold an election among the workers (Celery's ``election`` command)."""
        arguments = {"id": id, "topic": topic, "action": action}
        self.broadcast("election", arguments, connection=connection)


@dataclass(slots=True)
class Inspect:
    """Ask workers about their state (``app.control.inspect(destination, timeout, …)``).

    Each method returns ``{nodename: reply}`` for the workers that answered within the
    timeout, or ``None`` when none did.
    """

    control: Control
    destination: Sequence[str] | None = None
    timeout: float = 1.0
    callback: ReplyCallback | None = None
    connection: Transport | None = None
    limit: int | None = None
    pattern: str | None = None
    matcher: str | None = None

    def _request(
        self, command: str, destination: Sequence[str] | None = None, **arguments: object
    ) -> dict[str, NodeReply] | None:
        replies = self.control.broadcast(
            command,
            arguments,
            destination=destination or self.destination,
            connection=self.connection,
            reply=True,
            timeout=self.timeout,
            limit=self.limit,
            callback=self.callback,
            pattern=self.pattern,
            matcher=self.matcher,
        )
        if not replies:
            return None
        by_node = flatten_reply(replies)
        if self.pattern:
            pattern, matcher = self.pattern, self.matcher or "glob"
            return {node: r for node, r in by_node.items() if name_matches(node, pattern, matcher)}
        return by_node

    def ping(self, destination: Sequence[str] | None = None) -> dict[str, NodeReply] | None:
        """``{"w1@host": {"ok": "pong"}, …}``."""
        return self._request("ping", destination)

    def clock(self) -> dict[str, NodeReply] | None:
        """Each worker's logical clock: ``{"w1@host": {"clock": 12}}``."""
        return self._request("clock")

    def active(self, safe: bool | None = None) -> dict[str, NodeReply] | None:
        """The tasks each worker is running."""
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict[str, NodeReply] | None:
        """The tasks each worker has taken and not started (ETA tasks aside)."""
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> dict[str, NodeReply] | None:
        """The ETA and countdown tasks each worker holds."""
        return self._request("scheduled")

    def revoked(self) -> dict[str, NodeReply] | None:
        """The ids each worker knows to be revoked."""
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict[str, NodeReply] | None:
        """The task names each worker knows, with the task attributes named."""
        return self._request("registered", taskinfoitems=taskinfoitems)

    registered_tasks = registered

    def stats(self) -> dict[str, NodeReply] | None:
        """Each worker's statistics (pool, broker, totals per task, rusage…)."""
        return self._request("stats")

    def active_queues(self) -> dict[str, NodeReply] | None:
        """The queues each worker consumes from."""
        return self._request("active_queues")

    def query_task(self, *ids: str | Sequence[str]) -> dict[str, NodeReply] | None:
        """What each worker knows of these task ids (a list of ids is taken too)."""
        if len(ids) == 1 and isinstance(ids[0], list | tuple):
            ids = tuple(ids[0])
        return self._request("query_task", ids=ids)

    def conf(self, with_defaults: bool = False) -> dict[str, NodeReply] | None:
        """Each worker's configuration (settings at their default too, if asked)."""
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> dict[str, NodeReply] | None:
        """Each worker's human-readable report: ``{"w1@host": {"ok": text}}``."""
        return self._request("report")

    def hello(
        self, from_node: str, revoked: Sequence[str] | None = None
    ) -> dict[str, NodeReply] | None:
        """A worker joining the cluster greets the others (Celery's mingle)."""
        return self._request("hello", from_node=from_node, revoked=revoked)
