"""One AMQP 0-9-1 connection over a blocking socket, driven by the thread that uses it.

No I/O thread and no callbacks run behind the caller's back: bytes are read only inside
:meth:`AMQPConnection.pump` (called by every blocking operation), which parses all complete
frames at once and hands message events to a :class:`FrameListener`. Replies to
synchronous methods (declare-ok, consume-ok, ...) are queued per channel for
:meth:`AMQPConnection.rpc`. Heartbeats are sent and checked while pumping, so a caller that
waits in ``fetch`` keeps the connection alive; one that does not call in for longer than
two heartbeat intervals finds the connection closed by the broker and reconnects.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from pika import spec

from celeriac.transports.amqp import codec
from celeriac.transports.amqp.codec import Content, Deliver

logger = logging.getLogger("celeriac.transports.amqp")

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
#: Largest frame we accept; RabbitMQ's default is 128 KiB too.
CLIENT_FRAME_MAX = 131072
RECV_SIZE = 262144

ACCESS_REFUSED = 403
NOT_ALLOWED = 530
#: CONNECTION_FORCED, INTERNAL_ERROR
RETRYABLE_CLOSE_CODES = frozenset({320, 541})

_DELIVER = (codec.BASIC_CLASS << 16) | 60
_ACK = (codec.BASIC_CLASS << 16) | 80
_NACK = (codec.BASIC_CLASS << 16) | 120
_RETURN = (codec.BASIC_CLASS << 16) | 50


class ConnectionLost(Exception):
    """The connection is gone (network error, broker closed it, missed heartbeats)."""

    def __init__(self, reason: str, *, reply_code: int = 0, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reply_code = reply_code
        self.retryable = retryable


class ChannelError(Exception):
    """The broker closed a channel because an operation on it failed (404, 406, ...)."""

    def __init__(self, reply_code: int, reply_text: str, channel: int) -> None:
        super().__init__(f"{reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.channel = channel


class FrameListener(Protocol):
    """Receives what the broker sends on its own initiative."""

    def on_delivery(
        self, channel: int, deliver: Deliver, content: Content, body: bytes, unreadable: str | None
    ) -> None:
        """A message; ``unreadable`` says why its properties could not be read (then
        ``content`` is empty and only the body is the publisher's)."""

    def on_confirm(self, channel: int, delivery_tag: int, multiple: bool, ack: bool) -> None: ...

    def on_consumer_cancelled(self, channel: int, consumer_tag: str) -> None: ...

    def on_channel_closed(self, channel: int, error: ChannelError) -> None: ...


@dataclass(frozen=True, slots=True)
class ConnectionParams:
    host: str
    port: int
    userid: str
    password: str
    virtual_host: str
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    heartbeat: float = 120.0
    connect_timeout: float = 4.0
    client_properties: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        scheme = "amqps" if self.ssl_context else "amqp"
        return f"{scheme}://{self.userid}@{self.host}:{self.port}/{self.virtual_host}"


@dataclass(slots=True)
class _PendingContent:
    """A delivery whose header/body frames are still arriving."""

    deliver: Deliver | None  # None: a basic.return being skipped
    content: Content | None = None
    #: Why the properties could not be read, when they could not.
    unreadable: str | None = None
    body_size: int = 0
    chunks: list[bytes] = field(default_factory=list)
    received: int = 0


class AMQPConnection:
    def __init__(self, params: ConnectionParams, listener: FrameListener) -> None:
        self.params = params
        self.listener = listener
        self.frame_max = CLIENT_FRAME_MAX
        self.heartbeat = 0.0
        self.blocked = False
        self.server_properties: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._rest = b""
        self._replies: dict[int, deque[Any]] = {}
        self._content: dict[int, _PendingContent] = {}
        self._last_sent = self._last_received = self._last_pumped = time.monotonic()
        self._next_channel = 1

    # -- opening and closing -----------------------------------------------------------

    def open(self) -> None:
        params = self.params
        try:
            sock = socket.create_connection(
                (params.host, params.port), timeout=params.connect_timeout
            )
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {params.describe()}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        try:
            if params.ssl_context is not None:
                sock = params.ssl_context.wrap_socket(
                    sock, server_hostname=params.server_hostname or params.host
                )
            self._sock = sock
            self._handshake()
        except (OSError, ConnectionLost) as exc:
            self._drop_socket()
            if isinstance(exc, ConnectionLost):
                raise
            raise ConnectionLost(f"handshake with {params.describe()} failed: {exc}") from exc

    def _handshake(self) -> None:
        params = self.params
        deadline = time.monotonic() + params.connect_timeout
        self.send(PROTOCOL_HEADER)
        start = self._wait_reply(0, spec.Connection.Start, deadline)
        self.server_properties = dict(start.server_properties or {})
        mechanisms = start.mechanisms.decode() if isinstance(start.mechanisms, bytes) else ""
        if "PLAIN" not in mechanisms.split():
            raise ConnectionLost(
                f"broker offers no PLAIN login (mechanisms: {mechanisms})", retryable=False
            )
        client_properties = {
            "product": "celeriac",
            "platform": f"Python {platform.python_version()}",
            "capabilities": {
                "publisher_confirms": True,
                "consumer_cancel_notify": True,
                "basic.nack": True,
                "connection.blocked": True,
                "authentication_failure_close": True,
                "exchange_exchange_bindings": True,
                "per_consumer_qos": True,
            },
            **params.client_properties,
        }
        response = f"\0{params.userid}\0{params.password}"
        self.send_method(0, spec.Connection.StartOk(client_properties, "PLAIN", response, "en_US"))
        tune = self._wait_reply(0, spec.Connection.Tune, deadline, during_login=True)
        self.frame_max = min(tune.frame_max or CLIENT_FRAME_MAX, CLIENT_FRAME_MAX)
        self.heartbeat = _negotiate_heartbeat(params.heartbeat, tune.heartbeat)
        self.send_method(
            0, spec.Connection.TuneOk(tune.channel_max, self.frame_max, int(self.heartbeat))
        )
        self.send_method(0, spec.Connection.Open(params.virtual_host))
        self._wait_reply(0, spec.Connection.OpenOk, deadline, during_login=True)

    def _wait_reply(
        self, channel: int, expected: type, deadline: float, during_login: bool = False
    ) -> Any:
        replies = self._replies.setdefault(channel, deque())
        while not replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionLost(
                    f"{self.params.describe()}: no {expected.__name__} from the broker within "
                    f"{self.params.connect_timeout}s"
                )
            try:
                self.pump(remaining)
            except ConnectionLost as exc:
                if during_login and exc.reply_code in (ACCESS_REFUSED, NOT_ALLOWED):
                    raise ConnectionLost(
                        f"{self.params.describe()} refused the login or the virtual host "
                        f"({exc}); check user, password and vhost permissions",
                        reply_code=exc.reply_code,
                        retryable=False,
                    ) from exc
                raise
        reply = replies.popleft()
        if not isinstance(reply, expected):
            raise ConnectionLost(f"expected {expected.__name__}, broker sent {reply!r}")
        return reply

    def close(self) -> None:
        """Close politely (the broker requeues what this connection held unacked)."""
        if self._sock is None:
            return
        try:
            self.send_method(0, spec.Connection.Close(200, "bye", 0, 0))
            deadline = time.monotonic() + 1.0
            replies = self._replies.setdefault(0, deque())
            while time.monotonic() < deadline:
                if any(isinstance(reply, spec.Connection.CloseOk) for reply in replies):
                    break
                self.pump(deadline - time.monotonic())
        except (OSError, ConnectionLost):
            pass  # closing anyway
        finally:
            self._drop_socket()

    def abort(self) -> None:
        """Drop the socket without a goodbye (the broker requeues what we held)."""
        self._drop_socket()

    def _drop_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):  # already broken
                sock.close()

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    # -- channels and synchronous methods --------------------------------------------------

    def open_channel(self) -> int:
        channel = self._next_channel
        self._next_channel += 1
        self._replies[channel] = deque()
        self.rpc(channel, spec.Channel.Open(), spec.Channel.OpenOk)
        return channel

    def discard_channel(self, channel: int) -> None:
        """Forget what is queued for a channel the broker has closed."""
        self._replies.pop(channel, None)
        self._content.pop(channel, None)

    def rpc(self, channel: int, method: Any, expected: type | tuple[type, ...]) -> Any:
        """Send a synchronous method and wait for its reply (deliveries keep flowing)."""
        replies = self._replies.setdefault(channel, deque())
        self.send_method(channel, method)
        while not replies:
            self.pump(None)
        reply = replies.popleft()
        if isinstance(reply, ChannelError):
            raise reply
        if not isinstance(reply, expected):
            raise ConnectionLost(f"expected {expected!r} on channel {channel}, got {reply!r}")
        return reply

    def send_method(self, channel: int, method: Any) -> None:
        self.send(_method_frame(channel, method))

    # -- socket I/O ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise ConnectionLost("connection is closed")
        try:
            # A broker under a memory alarm stops reading: give up only after it has also
            # missed its heartbeats, then reconnect (unconfirmed messages are republished).
            sock.settimeout(self.heartbeat * 2 if self.heartbeat else None)
            sock.sendall(data)
        except OSError as exc:
            self._drop_socket()
            raise ConnectionLost(f"send failed: {exc}") from exc
        self._last_sent = time.monotonic()

    def poll_if_idle(self, idle: float = 1.0) -> None:
        """Before writing after a quiet spell, read what came in meanwhile: a broker that
        dropped an idle connection is noticed now, not after the message is gone."""
        if time.monotonic() - self._last_pumped >= idle:
            self.pump(0)

    def pump(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: until something arrives) for data and
        dispatch every complete frame. Returns whether anything arrived."""
        sock = self._sock
        if sock is None:
            raise ConnectionLost("connection is closed")
        self._last_pumped = time.monotonic()
        deadline = None if timeout is None else self._last_pumped + timeout
        while True:
            wait = self._beat()
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0.0))
            try:
                sock.settimeout(wait if wait < float("inf") else None)
                data = sock.recv(RECV_SIZE)
            except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
                if deadline is not None and time.monotonic() >= deadline:
                    self._beat()
                    return False
                continue
            except OSError as exc:
                self._drop_socket()
                raise ConnectionLost(f"connection error: {exc}") from exc
            if not data:
                self._drop_socket()
                raise ConnectionLost("connection closed by the broker")
            self._last_received = time.monotonic()
            self._dispatch(self._rest + data if self._rest else data)
            return True

    def _beat(self) -> float:
        """Send a heartbeat when one is due; return how long we may wait for data."""
        if not self.heartbeat:
            return float("inf")
        now = time.monotonic()
        if now - self._last_received > self.heartbeat * 2:
            self._drop_socket()
            raise ConnectionLost(f"no heartbeat from the broker for {self.heartbeat * 2:.0f}s")
        interval = self.heartbeat / 2
        if now - self._last_sent >= interval:
            self.send(codec.HEARTBEAT_FRAME)
        return interval

    # -- frame parsing -----------------------------------------------------------------------

    def _dispatch(self, data: bytes) -> None:
        offset = 0
        size_total = len(data)
        head = codec._frame_head
        while size_total - offset >= codec.FRAME_OVERHEAD:
            frame_type, channel, size = head.unpack_from(data, offset)
            end = offset + codec.FRAME_HEADER_SIZE + size
            if end >= size_total:
                break
            if data[end] != codec.FRAME_END:
                self._drop_socket()
                raise ConnectionLost(f"frame without frame-end octet (type {frame_type})")
            payload = data[offset + codec.FRAME_HEADER_SIZE : end]
            offset = end + 1
            try:
                if frame_type == codec.FRAME_METHOD:
                    self._on_method_frame(channel, payload)
                elif frame_type == codec.FRAME_HEADER:
                    self._on_header_frame(channel, payload)
                elif frame_type == codec.FRAME_BODY:
                    self._on_body_frame(channel, payload)
                elif frame_type != codec.FRAME_HEARTBEAT:
                    self._drop_socket()
                    raise ConnectionLost(f"unknown frame type {frame_type}")
            except codec.FrameError as exc:  # what follows on the channel cannot be trusted
                self._drop_socket()
                raise ConnectionLost(f"malformed frame from the broker: {exc}") from exc
        self._rest = data[offset:]

    def _on_method_frame(self, channel: int, payload: bytes) -> None:
        index = int.from_bytes(payload[:4], "big")
        if index == _DELIVER:
            self._content[channel] = _PendingContent(codec.parse_deliver(payload))
        elif index in (_ACK, _NACK):
            tag, multiple = codec.parse_ack(payload)
            self.listener.on_confirm(channel, tag, multiple, index == _ACK)
        elif index == _RETURN:
            self._content[channel] = _PendingContent(None)
        else:
            method_class = spec.methods.get(index)
            if method_class is None:
                raise ConnectionLost(f"unknown AMQP method {index >> 16}.{index & 0xFFFF}")
            method = method_class()
            method.decode(payload, 4)
            self._on_control_method(channel, method)

    def _on_control_method(self, channel: int, method: Any) -> None:
        if isinstance(method, spec.Connection.Close):
            self.send_method(0, spec.Connection.CloseOk())
            self._drop_socket()
            raise ConnectionLost(
                f"connection closed by the broker: {method.reply_code} {method.reply_text}",
                reply_code=method.reply_code,
                # Forced closes (restart, management action) and internal errors pass;
                # the other codes say that this client did something wrong, so retrying
                # would only do it again.
                retryable=method.reply_code in RETRYABLE_CLOSE_CODES,
            )
        if isinstance(method, spec.Connection.Blocked):
            self.blocked = True
            logger.warning("broker blocked publishing: %s", method.reason)
        elif isinstance(method, spec.Connection.Unblocked):
            self.blocked = False
            logger.info("broker unblocked publishing")
        elif isinstance(method, spec.Channel.Close):
            self.send_method(channel, spec.Channel.CloseOk())
            error = ChannelError(method.reply_code, method.reply_text, channel)
            self._replies.setdefault(channel, deque()).append(error)
            self._content.pop(channel, None)
            self.listener.on_channel_closed(channel, error)
        elif isinstance(method, spec.Basic.Cancel):
            # Consumer cancel notification: the queue was deleted (or failed over).
            if not method.nowait:
                self.send_method(channel, spec.Basic.CancelOk(method.consumer_tag))
            self.listener.on_consumer_cancelled(channel, method.consumer_tag)
        elif isinstance(method, spec.Channel.Flow):
            self.send_method(channel, spec.Channel.FlowOk(method.active))
        else:
            self._replies.setdefault(channel, deque()).append(method)

    def _on_header_frame(self, channel: int, payload: bytes) -> None:
        pending = self._content.get(channel)
        if pending is None:
            raise ConnectionLost(f"content header without a method on channel {channel}")
        body_size, flags = codec.parse_content_header(payload)
        pending.body_size = body_size
        if pending.deliver is not None:
            try:
                pending.content = codec.decode_properties(
                    payload, codec.CONTENT_HEADER_PROPERTIES_OFFSET, flags
                )
            except codec.FrameError as exc:
                # The frames are intact, only the publisher's properties are not: deliver
                # the message bare, so that it is dead-lettered once, rather than failing
                # the connection on it at every redelivery.
                pending.content = ("application/data", "binary", {}, {})
                pending.unreadable = f"unreadable AMQP properties: {exc}"
        if body_size == 0:
            self._complete(channel, pending, b"")

    def _on_body_frame(self, channel: int, payload: bytes) -> None:
        pending = self._content.get(channel)
        if pending is None:
            raise ConnectionLost(f"content body without a method on channel {channel}")
        if not pending.chunks and len(payload) == pending.body_size:
            self._complete(channel, pending, payload)
            return
        pending.chunks.append(payload)
        pending.received += len(payload)
        if pending.received >= pending.body_size:
            self._complete(channel, pending, b"".join(pending.chunks))

    def _complete(self, channel: int, pending: _PendingContent, body: bytes) -> None:
        del self._content[channel]
        if pending.deliver is None:
            logger.warning("broker returned an unroutable message (channel %d)", channel)
            return
        assert pending.content is not None
        self.listener.on_delivery(
            channel, pending.deliver, pending.content, body, pending.unreadable
        )


def _method_frame(channel: int, method: Any) -> bytes:
    payload = method.INDEX.to_bytes(4, "big") + b"".join(method.encode())
    return codec.frame(codec.FRAME_METHOD, channel, payload)


def _negotiate_heartbeat(client: float, server: int) -> float:
    """The smaller of both wishes; 0 (off) only if the client asks for it."""
    if not client:
        return 0.0
    if not server:
        return float(int(client))
    return float(min(int(client), server))
