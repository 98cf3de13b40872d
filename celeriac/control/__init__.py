"""Remote control: Celery's "pidbox" mailbox, its client API and the node side.

* :class:`Control` and :class:`Inspect` (``client``): what ``app.control`` and
  ``app.control.inspect()`` are, with Celery's method names.
* :class:`Mailbox` and :class:`Broadcaster` (``mailbox``): the exchanges, queues and
  message shapes Celery 5 uses, and the sending of a request with the collecting of
  its replies.
* :class:`Node` (``node``): what a worker runs to answer, given a table of commands.
"""

from celeriac.control.client import Control, Inspect, flatten_reply
from celeriac.control.clock import LamportClock
from celeriac.control.mailbox import Broadcaster, Mailbox, Reply, ReplyTo, Request
from celeriac.control.node import Handler, Node

__all__ = [
    "Broadcaster",
    "Control",
    "Handler",
    "Inspect",
    "LamportClock",
    "Mailbox",
    "Node",
    "Reply",
    "ReplyTo",
    "Request",
    "flatten_reply",
]
