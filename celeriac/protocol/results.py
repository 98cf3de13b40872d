"""Result metadata as Celery stores it, and exceptions as they travel inside it.

A stored result is a mapping ``{status, result, traceback, children, date_done, task_id}``
(plus ``group_id``/``parent_id`` when known and, with ``result_extended``, ``name, args,
kwargs, worker, retries, queue``). An exception is stored as ``{exc_type, exc_message,
exc_module}`` and re-created on read: the same class when its module is loaded, otherwise
a class of that name made on the fly, so ``except ValueError`` still works for builtins.
"""

from __future__ import annotations

import builtins
import datetime as dt
import sys
from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict, cast

from celeriac import exceptions, states
from celeriac.protocol import serializers
from celeriac.protocol.limits import DEFAULT_LIMITS, Limits
from celeriac.protocol.serializers import json_dumps

#: celeriac's own exceptions are stored under Celery's module name, so Celery peers
#: re-create them as their own type (and we map them back on read).
_OWN_MODULE = "celeriac.exceptions"
_CELERY_MODULE = "celery.exceptions"
#: Modules whose exceptions a Celery peer stores and celeriac has under its own module:
#: Celery's time-limit and worker-lost errors come from billiard.
_READ_AS_OWN = frozenset({_CELERY_MODULE, "billiard.exceptions"})
#: Names that differ between the two packages.
_CELERY_NAMES = {"CeleriacError": "CeleryError"}
_OWN_NAMES = {celery: own for own, celery in _CELERY_NAMES.items()}


class Meta(TypedDict):
    """A task's stored result: the keys Celery writes, and reads from other writers.

    ``result`` is the return value, or the exception dict of a failure (``RETRY``,
    ``FAILURE``, ``REVOKED``); ``children`` holds the result tuples of the tasks it sent.
    A meta written by a Celery peer may carry more keys (stamps); they are kept as read.
    """

    status: str
    result: Any
    traceback: str | None
    children: list[Any]
    #: ISO-8601 UTC once the state is ready, else None.
    date_done: str | None
    task_id: str
    group_id: NotRequired[str]
    parent_id: NotRequired[str]
    #: The worker's request fields, with ``result_extended``.
    name: NotRequired[str | None]
    args: NotRequired[list[Any]]
    kwargs: NotRequired[dict[str, Any]]
    worker: NotRequired[str | None]
    retries: NotRequired[int]
    queue: NotRequired[str | None]
    #: ``rpc://`` only: the client the meta is sent to, taken out before it is sent.
    reply_to: NotRequired[str]


def utcnow_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def build_meta(
    task_id: str,
    status: str,
    result: Any,
    traceback: str | None = None,
    *,
    children: list[Any] | None = None,
    date_done: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Meta:
    """The mapping stored for a task; ``date_done`` is filled for ready states.

    ``extra`` holds optional keys of :class:`Meta` (callers build it as a plain dict).
    """
    if date_done is None and status in states.READY_STATES:
        date_done = utcnow_iso()
    meta: dict[str, Any] = {
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": children or [],
        "date_done": date_done,
        "task_id": task_id,
    }
    if extra:
        meta.update(extra)
    return cast(Meta, meta)


def loads_result(
    data: bytes,
    content_type: str,
    accept: frozenset[str] | None = None,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Any:
    """A stored value (a task's meta, a group's saved result) as a result backend reads it.

    Raises :class:`~celeriac.exceptions.ContentDisallowed` for a content type not in
    ``accept``, and :class:`~celeriac.exceptions.DecodeError` for data over
    ``limits.max_result_bytes``, data the serializer cannot read and nesting deeper than
    ``limits.max_depth``.
    """
    if len(data) > limits.max_result_bytes:
        raise exceptions.DecodeError(
            f"stored result of {len(data)} bytes is over max_result_bytes={limits.max_result_bytes}"
        )
    return serializers.loads(data, content_type, accept, limits=limits)


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    """Store an exception as Celery does: ``{exc_type, exc_message, exc_module}``."""
    cls = type(exc)
    module = cls.__module__
    name = cls.__qualname__
    if module == _OWN_MODULE:
        module = _CELERY_MODULE
        name = _CELERY_NAMES.get(name, name)
    try:
        message = list(exc.args)
        json_dumps(message)
    except Exception:  # args that JSON cannot carry travel as their text
        message = [str(exc)]
    return {"exc_type": name, "exc_message": message, "exc_module": module}


_synthesized: dict[tuple[str, str], type[Exception]] = {}


def exception_from_dict(data: Any) -> BaseException:
    """Re-create an exception stored by :func:`exception_to_dict` (or by Celery).

    The class is looked up among modules already imported, never imported because a stored
    result names it (stored data must not run code); a class that is not found, or is not
    an exception, is stood in for by an exception class of the same name and module.
    """
    if isinstance(data, BaseException):
        return data
    if not isinstance(data, Mapping) or "exc_type" not in data:
        return Exception(data)
    exc_type = str(data["exc_type"])
    module = str(data.get("exc_module") or "builtins")
    message = data.get("exc_message", [])
    args = tuple(message) if isinstance(message, list | tuple) else (message,)
    cls = _find_exception_class(module, exc_type)
    try:
        return cls(*args)
    except Exception:
        return _synthesize(module, exc_type)(*args)


def _find_exception_class(module: str, name: str) -> type[BaseException]:
    found: Any = None
    if module in _READ_AS_OWN:
        found = exceptions
        name_here = _OWN_NAMES.get(name, name)
        for part in name_here.split("."):
            found = getattr(found, part, None)
    if found is None:
        found = builtins if module == "builtins" else sys.modules.get(module)
        for part in name.split("."):
            found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, BaseException):
        return found
    return _synthesize(module, name)


def _synthesize(module: str, name: str) -> type[Exception]:
    key = (module, name)
    cls = _synthesized.get(key)
    if cls is None:
        # type() refuses a NUL in a class name: stored data may hold one
        class_name = name.rsplit(".", 1)[-1].replace("\0", "")
        cls = type(class_name, (Exception,), {"__module__": module})
        _synthesized[key] = cls
    return cls
