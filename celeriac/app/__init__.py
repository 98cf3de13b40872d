"""The application layer: ``Celery``, its settings, tasks, routing and publishing."""

from celeriac.app.base import Celery, shared_task
from celeriac.app.task import Task

__all__ = ["Celery", "Task", "shared_task"]
