"""Celery's remote-control mailbox ("pidbox"): where requests and replies travel, and how.

The layout, as Celery 5 declares it (``namespace`` is the ``control_exchange`` setting,
``celery`` by default), so that Celery and celeriac nodes and callers share one mailbox:

* Requests go to the fanout exchange ``<namespace>.pidbox``. Each node consumes its own
  queue ``<nodename>.<namespace>.pidbox`` bound to it: ``x-expires`` from
  ``control_queue_expires``, ``x-message-ttl`` from ``control_queue_ttl``, durable and
  exclusive by ``control_queue_durable`` and ``control_queue_exclusive``, auto-delete
  unless durable.
* Replies go to the direct exchange ``reply.<namespace>.pidbox`` with the caller's id as
  routing key, which binds the caller's queue ``<id>.reply.<namespace>.pidbox`` (same
  arguments).
* A request body is ``{"method", "arguments", "destination", "pattern", "matcher"}``, plus
  ``"ticket"`` and ``"reply_to": {"exchange", "routing_key"}`` when replies are wanted;
  its headers are ``{"clock", "expires"}`` (Unix time after which it is void; 0: never).
  A reply body is ``{<nodename>: <reply>}``, its headers ``{"ticket", "clock"}``.

How each broker carries it: on RabbitMQ as declared; on Redis the broadcast exchange is
a Pub/Sub channel (a node hears only what is published while it is subscribed) and
replies are list pushes found through kombu's binding set; on SQLite the exchange copies
each request into every bound queue, and queues do not expire, so a node reads what
came while it was away and drops it as expired.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from celeriac.control.clock import LamportClock
from celeriac.exceptions import ContentDisallowed, DecodeError, ImproperlyConfigured
from celeriac.protocol import serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.message import Envelope, safe_repr
from celeriac.transports.base import Transport
from celeriac.wire.queues import QueueSpec, expiry_arguments

logger = logging.getLogger("celeriac.control")

#: How a request's ``pattern`` is matched against node names.
MATCHERS = ("glob", "pcre")
#: Celery's request messages are persistent, its replies transient (as observed).
_PERSISTENT = 2
_TRANSIENT = 1
#: Replies taken from the reply queue per fetch.
_REPLIES_PER_FETCH = 100
#: The wait of one fetch when replies are collected without a timeout.
_WAIT_SLICE = 1.0

#: One node's reply: ``{"ok": value}``, ``{"error": message}``, or a command's own value.
NodeReply = Any
#: ``{<nodename>: <reply>}``, as a reply message carries it.
ReplyBody = dict[str, NodeReply]


class MalformedMessage(DecodeError):
    """A control message that is not what the mailbox layout says: skipped."""


@dataclass(frozen=True, slots=True)
class ReplyTo:
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class Request:
    """A command for the nodes it is addressed to."""

    method: str
    arguments: dict[str, object]
    #: Node names; ``None`` (or empty): every node the pattern matches, or all.
    destination: tuple[str, ...] | None = None
    pattern: str | None = None
    matcher: str | None = None
    #: Set when replies are wanted: they carry it back, to the queue ``reply_to`` routes to.
    ticket: str | None = None
    reply_to: ReplyTo | None = None
    clock: int = 0
    #: Unix time after which the request is void; 0: never.
    expires: float = 0.0

    def expired(self, now: float) -> bool:
        return bool(self.expires) and now > self.expires

    def addressed_to(self, nodename: str) -> bool:
        """Celery's rule: the destination list if any, else the pattern if any, else all."""
        if self.destination:
            return nodename in self.destination
        if self.pattern and self.matcher:
            return name_matches(nodename, self.pattern, self.matcher)
        return True


@dataclass(frozen=True, slots=True)
class Reply:
    """What one node answered to the request with ``ticket``."""

    body: ReplyBody
    ticket: str | None
    clock: int = 0


def name_matches(nodename: str, pattern: str, matcher: str) -> bool:
    """kombu's matchers: ``glob`` (shell wildcards), ``pcre`` (a regex matched at the start)."""
    if matcher == "glob":
        return fnmatchcase(nodename, pattern)
    if matcher == "pcre":
        return re.match(pattern, nodename) is not None
    raise ValueError(f"unknown matcher {matcher!r} (known: {', '.join(MATCHERS)})")


@dataclass(frozen=True, slots=True)
class Mailbox:
    """The mailbox of one namespace: its exchanges, queues and message shapes."""

    namespace: str = "celery"
    serializer: str = "json"
    #: MIME types a message may have (``accept_content``); ``None``: any.
    accept: frozenset[str] | None = frozenset({"application/json"})
    #: Seconds; ``None`` leaves the argument out (no TTL, no expiry).
    queue_ttl: float | None = 300.0
    queue_expires: float | None = 10.0
    queue_durable: bool = False
    queue_exclusive: bool = False
    limits: Limits = DEFAULT_LIMITS

    @classmethod
    def from_settings(cls, conf: Mapping[str, Any], limits: Limits = DEFAULT_LIMITS) -> Mailbox:
        """The mailbox Celery's ``app.control`` uses with these settings."""
        durable = bool(conf["control_queue_durable"])
        exclusive = bool(conf["control_queue_exclusive"])
        if durable and exclusive:
            raise ImproperlyConfigured(
                "control_queue_durable and control_queue_exclusive cannot both be True "
                "(exclusive queues are deleted with their connection, so cannot be durable)"
            )
        accept = conf["accept_content"]
        ttl, expires = conf["control_queue_ttl"], conf["control_queue_expires"]
        return cls(
            namespace=str(conf["control_exchange"]),
            serializer=str(conf["task_serializer"]),
            accept=serializers.content_types(accept) if accept else None,
            queue_ttl=None if ttl is None else float(ttl),
            queue_expires=None if expires is None else float(expires),
            queue_durable=durable,
            queue_exclusive=exclusive,
            limits=limits,
        )

    @property
    def exchange(self) -> str:
        return f"{self.namespace}.pidbox"

    @property
    def reply_exchange(self) -> str:
        return f"reply.{self.namespace}.pidbox"

    def node_queue(self, nodename: str) -> QueueSpec:
        """The queue a node takes its requests from."""
        return self._queue(f"{nodename}.{self.exchange}", self.exchange, "fanout", "")

    def reply_queue(self, caller_id: str) -> QueueSpec:
        """The queue a caller takes its replies from."""
        return self._queue(
            f"{caller_id}.{self.reply_exchange}", self.reply_exchange, "direct", caller_id
        )

    def _queue(self, name: str, exchange: str, exchange_type: str, routing_key: str) -> QueueSpec:
        return QueueSpec(
            name,
            exchange=exchange,
            exchange_type=exchange_type,
            routing_key=routing_key,
            durable=self.queue_durable,
            auto_delete=not self.queue_durable,
            exclusive=self.queue_exclusive,
            arguments=expiry_arguments(self.queue_ttl, self.queue_expires),
        )

    # -- messages ------------------------------------------------------------------------

    def request_envelope(self, request: Request) -> Envelope:
        body: dict[str, object] = {
            "method": request.method,
            "arguments": request.arguments,
            "destination": None if request.destination is None else list(request.destination),
            "pattern": request.pattern,
            "matcher": request.matcher,
        }
        if request.reply_to is not None:
            body["ticket"] = request.ticket
            body["reply_to"] = {
                "exchange": request.reply_to.exchange,
                "routing_key": request.reply_to.routing_key,
            }
        headers = {"clock": request.clock, "expires": request.expires}
        return self._envelope(body, headers, _PERSISTENT, self.exchange, "")

    def reply_envelope(self, reply: Reply, reply_to: ReplyTo) -> Envelope:
        headers = {"ticket": reply.ticket, "clock": reply.clock}
        return self._envelope(
            reply.body, headers, _TRANSIENT, reply_to.exchange, reply_to.routing_key
        )

    def _envelope(
        self,
        body: Mapping[str, object],
        headers: Mapping[str, object],
        delivery_mode: int,
        exchange: str,
        routing_key: str,
    ) -> Envelope:
        content_type, content_encoding, data = serializers.dumps(body, self.serializer)
        return Envelope(
            data,
            dict(headers),
            {"delivery_mode": delivery_mode},
            content_type,
            content_encoding,
            exchange=exchange,
            routing_key=routing_key,
        )

    def parse_request(self, envelope: Envelope) -> Request:
        """The request a message carries; :class:`MalformedMessage` says what is wrong."""
        body = self._decode(envelope)
        method = body.get("method")
        if not isinstance(method, str) or not method:
            raise MalformedMessage(f"no command name (method: {safe_repr(method)})")
        arguments = body.get("arguments") or {}
        if not isinstance(arguments, dict) or not all(isinstance(k, str) for k in arguments):
            raise MalformedMessage(f"arguments are not a mapping of names: {safe_repr(arguments)}")
        pattern, matcher = _text(body, "pattern"), _text(body, "matcher")
        if pattern and matcher:
            _check_pattern(pattern, matcher)
        return Request(
            method,
            arguments,
            destination=_destination(body.get("destination")),
            pattern=pattern,
            matcher=matcher,
            ticket=_text(body, "ticket"),
            reply_to=_reply_to(body.get("reply_to")),
            clock=_clock(envelope.headers),
            expires=_expires(envelope.headers),
        )

    def parse_reply(self, envelope: Envelope) -> Reply:
        """The reply a message carries; :class:`MalformedMessage` says what is wrong."""
        body = self._decode(envelope)
        ticket = envelope.headers.get("ticket")
        if ticket is not None and not isinstance(ticket, str):
            raise MalformedMessage(f"ticket is not a string: {safe_repr(ticket)}")
        return Reply(body, ticket, _clock(envelope.headers))

    def _decode(self, envelope: Envelope) -> dict[str, object]:
        if len(envelope.body) > self.limits.max_message_bytes:
            raise MalformedMessage(
                f"body of {len(envelope.body)} bytes, over {self.limits.max_message_bytes}"
            )
        try:
            body = serializers.loads(
                envelope.body, envelope.content_type, self.accept, limits=self.limits
            )
        except (DecodeError, ContentDisallowed) as exc:
            raise MalformedMessage(str(exc)) from exc
        if not isinstance(body, dict) or not all(isinstance(key, str) for key in body):
            raise MalformedMessage(f"the body is not a mapping: {type(body).__name__}")
        return body


def _destination(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        return tuple(value)
    raise MalformedMessage(f"destination is not a list of node names: {safe_repr(value)}")


def _text(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedMessage(f"{key} is not a string: {safe_repr(value)}")
    return value


def _check_pattern(pattern: str, matcher: str) -> None:
    if matcher not in MATCHERS:
        raise MalformedMessage(
            f"unknown matcher {safe_repr(matcher)} (known: {', '.join(MATCHERS)})"
        )
    if matcher == "pcre":
        try:
            re.compile(pattern)
        except re.error as exc:
            raise MalformedMessage(f"pattern {safe_repr(pattern)} is not a regex: {exc}") from None


def _reply_to(value: object) -> ReplyTo | None:
    if value is None:
        return None
    if isinstance(value, dict):
        exchange, routing_key = value.get("exchange"), value.get("routing_key")
        if isinstance(exchange, str) and isinstance(routing_key, str):
            return ReplyTo(exchange, routing_key)
    raise MalformedMessage(f"reply_to is not an exchange and routing key: {safe_repr(value)}")


def _clock(headers: Mapping[str, object]) -> int:
    value = headers.get("clock") or 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise MalformedMessage(f"clock header is not an integer: {safe_repr(value)}")
    return value


def _expires(headers: Mapping[str, object]) -> float:
    value = headers.get("expires") or 0
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise MalformedMessage(f"expires header is not a number: {safe_repr(value)}")
    return float(value)


class Broadcaster:
    """The calling side: sends a request to the nodes and collects what they answer.

    Its replies come to a queue named by its own id, so two broadcasters (threads,
    processes) never take each other's. A transport is used by one thread at a time:
    a process that calls from several threads makes one broadcaster per thread.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        transport: Transport,
        clock: LamportClock | None = None,
        caller_id: str | None = None,
    ) -> None:
        self.mailbox = mailbox
        self.transport = transport
        self.clock = clock or LamportClock()
        self.caller_id = caller_id or str(uuid.uuid4())
        self._reply_queue = mailbox.reply_queue(self.caller_id)
        self._reply_to = ReplyTo(mailbox.reply_exchange, self.caller_id)
        self._reply_queue_declared = False

    def broadcast(
        self,
        command: str,
        arguments: Mapping[str, object] | None = None,
        destination: Sequence[str] | None = None,
        pattern: str | None = None,
        matcher: str | None = None,
        reply: bool = False,
        timeout: float | None = 1.0,
        limit: int | None = None,
        callback: Callable[[ReplyBody], object] | None = None,
    ) -> list[ReplyBody] | None:
        """Send ``command`` to the nodes; with ``reply``, the replies that came back.

        Replies are collected until ``timeout`` seconds have passed (``None``: no end) or
        ``limit`` replies have come (by default the number of ``destination`` names);
        ``callback`` is called with each as it comes. Without ``reply``: ``None``.
        """
        if destination is not None and not isinstance(destination, list | tuple):
            raise ValueError(
                f"destination must be a list or tuple of node names, not {destination!r}"
            )
        if limit is None and destination:
            limit = len(destination)
        ticket = str(uuid.uuid4()) if reply else None
        if ticket is not None and not self._reply_queue_declared:
            self.transport.declare([self._reply_queue])
            self._reply_queue_declared = True
        request = Request(
            command,
            dict(arguments or {}),
            destination=None if destination is None else tuple(destination),
            pattern=pattern,
            matcher=matcher,
            ticket=ticket,
            reply_to=None
            if ticket is None
            else ReplyTo(self.mailbox.reply_exchange, self.caller_id),
            clock=self.clock.forward(),
            expires=time.time() + timeout if timeout else 0.0,
        )
        self.transport.publish([self.mailbox.request_envelope(request)])
        if ticket is None:
            return None
        return self._collect(ticket, timeout, limit, callback)

    def _collect(
        self,
        ticket: str,
        timeout: float | None,
        limit: int | None,
        callback: Callable[[ReplyBody], object] | None,
    ) -> list[ReplyBody]:
        replies: list[ReplyBody] = []
        deadline = None if timeout is None else time.monotonic() + timeout
        queues = [self._reply_queue.name]
        while limit is None or len(replies) < limit:
            wait = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            deliveries = self.transport.fetch(queues, _REPLIES_PER_FETCH, wait)
            if deliveries:
                self.transport.ack(deliveries)
            for delivery in deliveries:
                body = self._reply_body(delivery.envelope, ticket)
                if body is None or (limit is not None and len(replies) >= limit):
                    continue
                replies.append(body)
                if callback is not None:
                    callback(body)
        return replies

    def _reply_body(self, envelope: Envelope, ticket: str) -> ReplyBody | None:
        """The body of a reply to ``ticket``; ``None`` for anything else."""
        try:
            reply = self.mailbox.parse_reply(envelope)
        except Exception as exc:  # a bad reply is this reply's problem, never the caller's
            logger.error("Skipped a malformed control reply on %s: %s", self._reply_queue.name, exc)
            return None
        self.clock.adjust(reply.clock)
        if reply.ticket != ticket:
            logger.debug("Dropped a control reply to another request (ticket %s)", reply.ticket)
            return None
        return reply.body
