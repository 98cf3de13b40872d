"""celeriac: a distributed task queue that speaks Celery's protocol, faster and simpler.

Switch from Celery by changing imports: ``from celeriac import Celery, shared_task``.
"""

from celeriac.app.base import Celery, shared_task
from celeriac.app.current import current_app, current_task
from celeriac.app.routing import Exchange, Queue
from celeriac.app.task import Task
from celeriac.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from celeriac.result import AsyncResult, EagerResult, GroupResult, ResultSet

__version__ = "0.1.0"
VERSION = (0, 1, 0)


__all__ = [
    "AsyncResult",
    "Celery",
    "EagerResult",
    "Exchange",
    "GroupResult",
    "Queue",
    "ResultSet",
    "Signature",
    "Task",
    "chain",
    "chord",
    "chunks",
    "current_app",
    "current_task",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "subtask",
    "xmap",
    "xstarmap",
]
