"""Monitoring events, wire-compatible with Celery's (``celery.events``).

Workers and clients send events (``task-received``, ``worker-heartbeat``…) to the event
exchange with an :class:`EventDispatcher`; monitors read them with an
:class:`EventReceiver` and keep a picture of the cluster in a :class:`State`. Celery's
receivers, its ``State`` and Flower read celeriac's events, and celeriac's read Celery's.
``app.events`` makes the three for an app.
"""

from celeriac.events.dispatcher import EventDispatcher
from celeriac.events.exchange import EventSettings
from celeriac.events.factory import Events
from celeriac.events.message import Event
from celeriac.events.receiver import EventReceiver
from celeriac.events.state import State

__all__ = [
    "Event",
    "EventDispatcher",
    "EventReceiver",
    "EventSettings",
    "Events",
    "State",
]
