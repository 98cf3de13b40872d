"""celeriac: a distributed task queue that speaks Celery's protocol, faster and simpler.

Switch from Celery by changing imports: ``from celeriac import Celery, shared_task``.
"""

from celeriac._state import get_current_app as _get_current_app
from celeriac.app.base import Celery, shared_task
from celeriac.app.routing import Exchange, Queue
from celeriac.app.task import Task
from celeriac.canvas import Signature, chain, chord, group, maybe_signature, signature, subtask

__version__ = "0.1.0"
VERSION = (0, 1, 0)


def __getattr__(name: str) -> object:
    if name == "current_app":
        return _get_current_app()
    if name == "current_task":
        from celeriac._state import get_current_task

        return get_current_task()
    if name in {"AsyncResult", "GroupResult", "ResultSet", "EagerResult"}:
        from celeriac import result

        return getattr(result, name)
    raise AttributeError(f"module 'celeriac' has no attribute {name!r}")


__all__ = [
    "Celery",
    "Exchange",
    "Queue",
    "Signature",
    "Task",
    "chain",
    "chord",
    "group",
    "maybe_signature",
    "shared_task",
    "signature",
    "subtask",
]
