"""The app in use and the task being executed, as the layers below the app see them.

``AsyncResult()`` or a signature without an ``app=`` uses "the app in use": the one most
recently created or ``set_current()``, else a default app made on first use (Celery's
behaviour). The apps belong to the app layer (:mod:`celeriac.app.current`), which tells
this module how to find the app in use when it is imported; ``import celeriac`` imports it.
The running task is a context variable, so it is right in threads and in asyncio tasks
alike.

:class:`App` and :class:`RunningTask` hold what results, workflows, publishing and logging
use of an app and of a task, so that these are typed without importing the app layer. The
results that sending returns are ``object`` here: workflows hand them back as they are.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from celeriac.backends.base import ResultBackend

if TYPE_CHECKING:  # imported on first use of app.control, not with every app
    from celeriac.control.client import Control


class TaskRequest(Protocol):
    """What is read of the request of a running task (``task.request``)."""

    @property
    def id(self) -> str | None: ...

    @property
    def root_id(self) -> str | None: ...

    @property
    def priority(self) -> int | None: ...

    @property
    def called_directly(self) -> bool: ...

    @property
    def is_eager(self) -> bool: ...


class RunningTask(Protocol):
    """A task being executed in this context (``current_task``)."""

    @property
    def name(self) -> str: ...

    @property
    def request(self) -> TaskRequest: ...


class RegisteredTask(RunningTask, Protocol):
    """A task of an app (``app.tasks[name]``), as signatures call it."""

    @property
    def app(self) -> App: ...

    @property
    def typing(self) -> bool: ...

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None: ...

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> object:
        """Send the task; an ``AsyncResult``."""
        ...

    def apply(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> object:
        """Run the task here; an ``EagerResult``."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


class TaskCall(NamedTuple):
    """One call of a task by name, with its ``apply_async`` options."""

    name: str
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    options: Mapping[str, Any]


class AppSettings(Protocol):
    """The settings workflows read (``app.conf``)."""

    @property
    def task_always_eager(self) -> bool: ...


class App(Protocol):
    """What results and workflows use of an app; :class:`celeriac.Celery` is one."""

    @property
    def conf(self) -> AppSettings: ...

    @property
    def tasks(self) -> Mapping[str, RegisteredTask]: ...

    @property
    def backend(self) -> ResultBackend: ...

    @property
    def oid(self) -> str: ...

    @property
    def control(self) -> Control: ...

    def send_task(
        self,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> object:
        """Send a task by name; an ``AsyncResult``."""
        ...

    def send_batch(self, calls: Sequence[TaskCall]) -> None: ...


def _no_app_layer() -> App:
    raise RuntimeError("celeriac.app.current is not imported, so there is no app in use")


_find_app: Callable[[], App] = _no_app_layer

current_task_var: contextvars.ContextVar[RunningTask | None] = contextvars.ContextVar(
    "celeriac_current_task", default=None
)


def find_current_app_with(finder: Callable[[], App]) -> None:
    """Set how the app in use is found (done by :mod:`celeriac.app.current` on import)."""
    global _find_app
    _find_app = finder


def get_current_app() -> App:
    """The app in use; a default app is made if none was created yet."""
    return _find_app()


def get_current_task() -> RunningTask | None:
    return current_task_var.get()
