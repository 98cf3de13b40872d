"""``app.events``: Celery's ``Dispatcher``, ``Receiver`` and ``State``, made for an app.

They take the app's ``event_*`` settings and, unless given a transport, a broker
connection of their own (``connection_for_write`` to send, ``connection_for_read`` to
receive), which they close with themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.exchange import EventSettings
from celeriac.events.receiver import EventReceiver, Handler
from celeriac.events.state import State
from celeriac.transports.base import Transport


class EventsApp(Protocol):
    """What the events need of an app: its settings and its broker."""

    @property
    def conf(self) -> Mapping[str, Any]: ...

    def connection_for_write(self) -> Transport: ...

    def connection_for_read(self) -> Transport: ...


class Events:
    """The event classes bound to ``app`` (Celery's ``app.events``)."""

    def __init__(self, app: EventsApp) -> None:
        self.app = app

    def Dispatcher(
        self,
        hostname: str | None = None,
        *,
        transport: Transport | None = None,
        enabled: bool = True,
        groups: Iterable[str] = (),
        buffer_group: Iterable[str] = (),
        buffer_limit: int = 24,
    ) -> EventDispatcher:
        """An :class:`~celeriac.events.dispatcher.EventDispatcher` on ``transport`` or a
        new connection of its own."""
        return EventDispatcher(
            transport or self.app.connection_for_write(),
            hostname,
            settings=EventSettings.from_conf(self.app.conf),
            enabled=enabled,
            groups=groups,
            buffer_group=buffer_group,
            buffer_limit=buffer_limit,
            owns_transport=transport is None,
        )

    def Receiver(
        self,
        handlers: Mapping[str, Handler] | None = None,
        *,
        transport: Transport | None = None,
        routing_key: str = "#",
        node_id: str | None = None,
        accept: Iterable[str] | None = None,
    ) -> EventReceiver:
        """An :class:`~celeriac.events.receiver.EventReceiver` on ``transport`` or a new
        connection of its own."""
        return EventReceiver(
            transport or self.app.connection_for_read(),
            handlers,
            routing_key=routing_key,
            node_id=node_id,
            settings=EventSettings.from_conf(self.app.conf),
            accept=accept,
            owns_transport=transport is None,
        )

    def State(self, max_workers: int = 5000, max_tasks: int = 10000) -> State:
        """An empty :class:`~celeriac.events.state.State`."""
        return State(max_workers, max_tasks)
