"""Sending events: stamp them, and publish them alone or in batches.

Events of the groups in ``buffer_group`` (a worker's ``task`` events, say) wait in a buffer
and go out as one message per group, a JSON array routed ``<group>.multi``, when
``buffer_limit`` of them have gathered or :meth:`EventDispatcher.flush` is called: Celery's
receivers read such arrays, and a busy worker sends one message for many events. Every
flush is one ``publish`` call, whatever the number of groups.

Events are transient monitoring data: a publish that fails raises to the caller, and the
events it carried are not sent again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Sequence

from celeriac.control.clock import LamportClock
from celeriac.events.exchange import EventSettings, declare_exchange
from celeriac.events.message import (
    PROCESS_CLOCK,
    Event,
    encode,
    group_of,
    multi_routing_key,
    routing_key_of,
    utcoffset,
)
from celeriac.protocol.message import Envelope
from celeriac.transports.base import Transport


def anonymous_nodename() -> str:
    """``gen<pid>@<host>``: the node name of a process that is not a worker (Celery's)."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


class EventDispatcher:
    """Sends events to the event exchange through ``transport``.

    Args:
        transport: the broker connection to publish with, used under this dispatcher's
            lock: threads may share the dispatcher, not its transport with other users.
        hostname: the node name events carry (default ``gen<pid>@<host>``).
        settings: the exchange and serializer (``EventSettings.from_conf(app.conf)``).
        enabled: ``False`` makes :meth:`dispatch` and :meth:`send` do nothing; settable
            at any time.
        groups: send only events of these groups (``task``, ``worker``); all if empty.
        buffer_group: groups whose events are sent in batches (see the module docstring).
        buffer_limit: events of one group that make a batch go out.
        clock: the Lamport clock to stamp events with (default: the process's).
        owns_transport: :meth:`close` closes ``transport`` too.
    """

    def __init__(
        self,
        transport: Transport,
        hostname: str | None = None,
        *,
        settings: EventSettings | None = None,
        enabled: bool = True,
        groups: Iterable[str] = (),
        buffer_group: Iterable[str] = (),
        buffer_limit: int = 24,
        clock: LamportClock | None = None,
        owns_transport: bool = False,
    ) -> None:
        self.transport = transport
        self.hostname = hostname or anonymous_nodename()
        self.settings = settings or EventSettings()
        self.enabled = enabled
        self.groups = frozenset(groups)
        self.buffer_group = frozenset(buffer_group)
        self.buffer_limit = buffer_limit
        self.clock = clock or PROCESS_CLOCK
        self.owns_transport = owns_transport
        self.pid = os.getpid()
        self._buffers: dict[str, list[Event]] = {group: [] for group in self.buffer_group}
        self._lock = threading.Lock()
        self._exchange_declared = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<EventDispatcher {self.hostname} on {self.transport!r}>"

    def __enter__(self) -> EventDispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, event_type: str, /, **fields: object) -> None:
        """Send an event of ``event_type`` with ``fields`` (Celery's ``send``)."""
        self.dispatch({"type": event_type, **fields})

    def dispatch(self, event: Event) -> None:
        """Send ``event`` (its ``type`` and fields: see :mod:`celeriac.events.standard`),
        stamped with this node's ``hostname``, ``utcoffset``, ``pid`` and clock, and with
        the time unless it has a ``timestamp``. Does nothing when disabled or closed."""
        if not self.enabled or self._closed:
            return
        event_type = event["type"]
        group = group_of(event_type)
        if self.groups and group not in self.groups:
            return
        stamped = self._stamp(event)
        with self._lock:
            buffer = self._buffers.get(group)
            if buffer is None:
                self._publish([self._envelope(stamped, routing_key_of(event_type))])
                return
            buffer.append(stamped)
            if len(buffer) >= self.buffer_limit:
                self._flush_buffers()

    def flush(self) -> None:
        """Send every buffered event now: one message per group, in one publish."""
        with self._lock:
            self._flush_buffers()

    def close(self) -> None:
        """Send what is buffered, then stop sending; closes the transport if it owns it."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            if self.owns_transport:
                self.transport.close()

    def _stamp(self, event: Event) -> Event:
        stamped = {
            **event,
            "hostname": self.hostname,
            "utcoffset": utcoffset(),
            "pid": self.pid,
            "clock": self.clock.forward(),
        }
        stamped.setdefault("timestamp", time.time())
        return stamped

    def _flush_buffers(self) -> None:
        batches = [(group, events) for group, events in self._buffers.items() if events]
        if not batches:
            return
        for group, _ in batches:
            self._buffers[group] = []
        self._publish(
            [self._envelope(events, multi_routing_key(group)) for group, events in batches]
        )

    def _envelope(self, payload: Event | Sequence[Event], routing_key: str) -> Envelope:
        return encode(
            payload,
            hostname=self.hostname,
            exchange=self.settings.exchange,
            routing_key=routing_key,
            serializer=self.settings.serializer,
        )

    def _publish(self, envelopes: Sequence[Envelope]) -> None:
        if not self._exchange_declared:
            declare_exchange(self.transport, self.settings)
            self._exchange_declared = True
        self.transport.publish(envelopes)
