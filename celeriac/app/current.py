"""Which app is in use (Celery's ``celery._state``, for the app layer).

The current app is the one most recently created (unless with ``set_as_current=False``) or
made current with ``app.set_current()``; when there is none, a default app is made on first
use, as Celery does. Every app is remembered (weakly), so that a shared task defined after
an app was finalized still reaches it. ``current_app`` and ``current_task`` stand for
whichever is current when they are used.

The layers below the app find the app in use through :mod:`celeriac._state`; this module
tells it how when imported (:mod:`celeriac.app.base` imports it, and ``import celeriac``
imports that).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from celeriac import _state

if TYPE_CHECKING:
    from celeriac.app.base import Celery
    from celeriac.app.task import Task

_lock = threading.Lock()
_current_app: Celery | None = None
_default_app: Celery | None = None
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
_on_app_finalizers: list[Callable[[Celery], object]] = []


def register_app(app: Celery) -> None:
    _apps.add(app)


def set_current_app(app: Celery) -> None:
    global _current_app
    _current_app = app


def get_current_app() -> Celery:
    """The current app; a default app (embedded broker) is made if none exists yet."""
    global _default_app
    if _current_app is not None:
        return _current_app
    with _lock:
        if _default_app is None:
            # Imported here because app.base imports this module.
            from celeriac.app.base import Celery

            _default_app = Celery("default", set_as_current=False)
        return _default_app


_state.find_current_app_with(get_current_app)


def connect_on_app_finalize(callback: Callable[[Celery], object]) -> None:
    """Run ``callback(app)`` when any app (present or future) is finalized."""
    _on_app_finalizers.append(callback)
    for app in list(_apps):
        if app.finalized:
            callback(app)


def app_finalizers() -> list[Callable[[Celery], object]]:
    return list(_on_app_finalizers)


class _CurrentAppProxy:
    """Stands for whichever app is current when it is used, like Celery's ``current_app``.

    ``from celeriac import current_app`` at the top of a module must not freeze the app that
    happened to be current at import time (often none yet, which would make a default app).
    """

    __slots__ = ()

    def _get_current_object(self) -> Celery:
        return get_current_app()

    def __getattr__(self, name: str) -> Any:
        return getattr(get_current_app(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(get_current_app(), name, value)

    def __eq__(self, other: object) -> bool:
        return get_current_app() == other

    def __hash__(self) -> int:
        return hash(get_current_app())

    def __repr__(self) -> str:
        return repr(get_current_app())


class _CurrentTaskProxy:
    """Stands for the task executing in this context (``None``-like outside a task)."""

    __slots__ = ()

    def _get_current_object(self) -> _state.RunningTask | None:
        return _state.get_current_task()

    def __getattr__(self, name: str) -> Any:
        return getattr(_state.get_current_task(), name)

    def __bool__(self) -> bool:
        return _state.get_current_task() is not None

    def __eq__(self, other: object) -> bool:
        return _state.get_current_task() == other

    def __hash__(self) -> int:
        return hash(_state.get_current_task())

    def __repr__(self) -> str:
        return repr(_state.get_current_task())


#: ``celeriac.current_app``: typed as the app it stands for.
current_app = cast("Celery", _CurrentAppProxy())
#: ``celeriac.current_task``: the running task, falsy outside one.
current_task = cast("Task[Any, Any]", _CurrentTaskProxy())
