"""Loggers at Celery's import path: ``get_task_logger(__name__)`` and ``get_logger``.

Task loggers are children of ``celery.task`` (the name Celery uses, so existing logging
configuration keeps matching) and their records carry ``task_id`` and ``task_name`` of the
task running in this context, for ``worker_task_log_format``.
"""

from __future__ import annotations

import logging
from typing import Any

from celeriac._state import get_current_task

TASK_LOGGER_NAME = "celery.task"

task_logger = logging.getLogger(TASK_LOGGER_NAME)
worker_logger = logging.getLogger("celeriac.worker")


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)


def get_task_logger(name: str) -> logging.Logger:
    """A logger whose records name the running task."""
    if name in _RESERVED:
        raise RuntimeError(f"Logger name {name!r} is reserved!")
    logger = logging.getLogger(name)
    if not _descends_from(logger, task_logger):
        # As Celery: task records go through ``celery.task``'s handlers (and its format with
        # the task id) even when an ancestor such as ``proj`` has handlers of its own.
        logger.parent = task_logger
    return logger


_RESERVED = frozenset({"celery", TASK_LOGGER_NAME, "celeriac", "celeriac.task"})


def _descends_from(logger: logging.Logger, ancestor: logging.Logger) -> bool:
    current: logging.Logger | None = logger
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


class TaskContextFilter(logging.Filter):
    """Adds ``task_id`` and ``task_name`` (``???`` outside a task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        task = get_current_task()
        request: Any = task.request if task is not None else None
        record.task_id = getattr(request, "id", None) or "???"
        record.task_name = getattr(task, "name", None) or "???"
        return True


class TaskFormatter(logging.Formatter):
    """Formatter for ``worker_task_log_format`` that never fails outside a task."""

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "task_id"):
            TaskContextFilter().filter(record)
        return super().format(record)
