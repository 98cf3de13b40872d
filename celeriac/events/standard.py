"""The events Celery's workers and clients send, with Celery's types and field names.

Each function returns an event: its ``type`` and its own fields. The dispatcher stamps the
fields every event has (``hostname``, ``timestamp``, ``utcoffset``, ``pid``, ``clock``).
Arguments, keyword arguments and results travel as ``repr`` strings, cut as Celery cuts
them: a client writes the reprs of the arguments into the task message's ``argsrepr`` and
``kwargsrepr`` headers (at most 1024 characters each), and its events and the worker's
carry those; a result is cut to the task's ``resultrepr_maxsize`` (1024 by default). An
exception's repr is sent whole, as Celery does.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import math
import os
import platform
import sys
from typing import Required, TypedDict, Unpack

from celeriac.events.message import Event
from celeriac.protocol.message import isoformat, safe_repr

#: Celery's default for ``Task.resultrepr_maxsize``: the longest result repr in an event.
RESULT_REPR_MAXSIZE = 1024

#: Monitors show it beside the version; neither Celery's ``State`` nor Flower reads it, so
#: it can say which library a worker of a mixed fleet runs (Celery's workers send
#: ``py-celery``).
SOFTWARE_IDENT = "py-celeriac"


def result_repr(value: object, maxsize: int = RESULT_REPR_MAXSIZE) -> str:
    """The ``result`` of a ``task-succeeded`` event: the value's repr, cut to ``maxsize``."""
    return safe_repr(value, maxsize)


class TaskMessage(TypedDict, total=False):
    """What a task message says of the call: ``args`` and ``kwargs`` are its repr headers
    (``argsrepr``, ``kwargsrepr``)."""

    args: Required[str]
    kwargs: Required[str]
    retries: int
    eta: dt.datetime | str | None
    expires: dt.datetime | str | None
    root_id: str | None
    parent_id: str | None


def task_sent(
    uuid: str,
    name: str,
    *,
    queue: str | None = None,
    exchange: str | None = None,
    routing_key: str | None = None,
    **message: Unpack[TaskMessage],
) -> Event:
    """A client published a task message, routed so."""
    return {
        **_task_message("task-sent", uuid, name, message),
        "queue": queue,
        "exchange": exchange,
        "routing_key": routing_key,
    }


def task_received(uuid: str, name: str, **message: Unpack[TaskMessage]) -> Event:
    """A worker took the task message."""
    return _task_message("task-received", uuid, name, message)


def _task_message(event_type: str, uuid: str, name: str, message: TaskMessage) -> Event:
    return {
        "type": event_type,
        "uuid": uuid,
        "name": name,
        "args": message["args"],
        "kwargs": message["kwargs"],
        "root_id": message.get("root_id"),
        "parent_id": message.get("parent_id"),
        "retries": message.get("retries", 0),
        "eta": _iso(message.get("eta")),
        "expires": _iso(message.get("expires")),
    }


def task_started(uuid: str) -> Event:
    return {"type": "task-started", "uuid": uuid}


def task_succeeded(uuid: str, result: str, runtime: float | None) -> Event:
    """``result``: :func:`result_repr` of the return value; ``runtime`` in seconds."""
    return {"type": "task-succeeded", "uuid": uuid, "result": result, "runtime": runtime}


def task_failed(uuid: str, exception: BaseException | str, traceback: str) -> Event:
    """``exception``: the exception, or its repr when only that is left of it."""
    return {
        "type": "task-failed",
        "uuid": uuid,
        "exception": _exception_repr(exception),
        "traceback": traceback,
    }


def task_retried(uuid: str, exception: BaseException | str, traceback: str) -> Event:
    """The task raised ``Retry`` (or an ``autoretry_for`` exception): it will run again."""
    return {
        "type": "task-retried",
        "uuid": uuid,
        "exception": _exception_repr(exception),
        "traceback": traceback,
    }


def task_rejected(uuid: str, requeue: bool) -> Event:
    return {"type": "task-rejected", "uuid": uuid, "requeue": requeue}


def task_revoked(
    uuid: str, *, terminated: bool = False, signum: int | None = None, expired: bool = False
) -> Event:
    """The task will not run (``expired``: because it expired), or was killed running
    (``terminated``, by signal ``signum``)."""
    return {
        "type": "task-revoked",
        "uuid": uuid,
        "terminated": terminated,
        "signum": signum,
        "expired": expired,
    }


def task_cancelled(uuid: str) -> Event:
    """The worker stopped the running task (for instance when the broker connection was
    lost under ``worker_cancel_long_running_tasks_on_connection_loss``)."""
    return {"type": "task-cancelled", "uuid": uuid}


def worker_online(*, freq: float, active: int, processed: int) -> Event:
    """The worker started; ``freq``: seconds between its heartbeats."""
    return _worker_event("worker-online", freq, active, processed)


def worker_heartbeat(*, freq: float, active: int, processed: int) -> Event:
    """The worker lives: ``active`` tasks running now, ``processed`` since it started.
    Monitors take a worker for gone when none arrives within twice ``freq`` seconds."""
    return _worker_event("worker-heartbeat", freq, active, processed)


def worker_offline(*, freq: float, active: int, processed: int) -> Event:
    return _worker_event("worker-offline", freq, active, processed)


def _worker_event(event_type: str, freq: float, active: int, processed: int) -> Event:
    return {
        "type": event_type,
        "freq": freq,
        "active": active,
        "processed": processed,
        "loadavg": load_average(),
        "sw_ident": SOFTWARE_IDENT,
        "sw_ver": _version(),
        "sw_sys": platform.system(),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded up to hundredths (as Celery sends them;
    zeros where the system has none)."""
    if not hasattr(os, "getloadavg"):
        return [0.0, 0.0, 0.0]
    return [math.ceil(load * 100) / 100 for load in os.getloadavg()]


def _iso(value: dt.datetime | str | None) -> str | None:
    return isoformat(value) if isinstance(value, dt.datetime) else value


def _exception_repr(exception: BaseException | str) -> str:
    return exception if isinstance(exception, str) else safe_repr(exception, sys.maxsize)


@functools.cache
def _version() -> str:
    try:
        return importlib.metadata.version("celeriac")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"
