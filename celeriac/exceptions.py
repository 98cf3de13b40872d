"""The exception tree, at the import path Celery users know (``celery.exceptions``).

Names and meanings follow Celery so that ``except celery.exceptions.X`` code keeps working
after changing the import, and so that exceptions stored by a Celery worker re-raise as
the same type here (see ``celeriac.protocol.results``).
"""

from __future__ import annotations

from typing import Any


class CeleriacError(Exception):
    """Base class of every error raised by celeriac itself."""


CeleryError = CeleriacError


class ImproperlyConfigured(CeleriacError, ImportError):
    """A setting is missing, unknown or has a value that cannot work."""


class SecurityError(CeleriacError):
    """A message failed a security check (content type not accepted, bad signature)."""


class ContentDisallowed(SecurityError):
    """A message uses a content type that ``accept_content`` does not allow."""


class DecodeError(CeleriacError):
    """A message body or header could not be decoded."""


class InvalidMessageError(DecodeError):
    """A message lacks what protocol v2 requires (for example the ``task`` or ``id`` header)."""


class NotRegistered(CeleriacError, KeyError):
    """The task name is not registered with this app."""

    def __repr__(self) -> str:
        return f"NotRegistered({self.args[0]!r})" if self.args else "NotRegistered()"

    def __str__(self) -> str:
        return repr(self)


class AlreadyRegistered(CeleriacError):
    """A different task is already registered under that name."""


class TimeoutError(CeleriacError):
    """Waiting for a result took longer than the timeout."""


class QueueNotFound(CeleriacError, KeyError):
    """A task was routed to a queue that is not defined and may not be created."""


class IncompleteStream(CeleriacError):
    """The end of a stream was reached before the whole value was read."""


class TaskPredicate(CeleriacError):
    """Base class for exceptions that tell the worker what to do with a task."""


class Retry(TaskPredicate):
    """Raised by ``Task.retry``: the task is scheduled to run again."""

    message: str | None
    exc: BaseException | None
    when: Any
    is_eager: bool
    sig: Any

    def __init__(
        self,
        message: str | None = None,
        exc: BaseException | str | None = None,
        when: Any = None,
        is_eager: bool = False,
        sig: Any = None,
        **kwargs: Any,
    ) -> None:
        self.message = message
        self.exc = exc if isinstance(exc, BaseException) else None
        self.excs = exc if isinstance(exc, str) else None
        self.when = when
        self.is_eager = is_eager
        self.sig = sig
        super().__init__(self, exc, when, **kwargs)

    def humanize(self) -> str:
        if isinstance(self.when, int | float):
            return f"in {self.when}s"
        return f"at {self.when}"

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry {self.humanize()}: {self.exc!r}"
        return f"Retry {self.humanize()}"

    def __reduce__(self) -> Any:
        return self.__class__, (self.message, self.exc, self.when)


RetryTaskError = Retry


class Ignore(TaskPredicate):
    """Raised inside a task: the worker stores no state and acknowledges the message."""


class Reject(TaskPredicate):
    """Raised inside a task: the message is rejected (optionally requeued)."""

    def __init__(self, reason: Any = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)

    def __repr__(self) -> str:
        return f"reject requeue={self.requeue}: {self.reason}"


class MaxRetriesExceededError(CeleriacError):
    """``Task.retry`` was called more often than ``max_retries`` allows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.task_args = kwargs.pop("task_args", [])
        self.task_kwargs = kwargs.pop("task_kwargs", {})
        super().__init__(*args, **kwargs)


class TaskError(CeleriacError):
    """Generic task error."""


class TaskRevokedError(CeleriacError):
    """The task was revoked (or had expired) and did not run."""


class NotConfigured(CeleriacError, UserWarning):
    """Celeriac has not been configured, defaults are used."""


class DuplicateNodenameWarning(UserWarning):
    """Two workers answered a remote-control request under one node name."""


class ChordError(CeleriacError):
    """A task in a chord's header failed, so the chord body cannot run."""


class BackendError(CeleriacError):
    """A result backend failed."""


class BackendGetMetaError(BackendError):
    """Reading a result from the backend failed."""


class BackendStoreError(BackendError):
    """Storing a result in the backend failed."""


class OperationalError(CeleriacError):
    """The broker could not be reached or refused an operation."""


class WorkerLostError(CeleriacError):
    """The process executing the task died before it finished."""


class Terminated(CeleriacError):
    """The task was terminated (``revoke(terminate=True)``)."""


class TimeLimitExceeded(CeleriacError):
    """The hard time limit of the task was exceeded; its process was killed."""


class SoftTimeLimitExceeded(CeleriacError):
    """The soft time limit of the task was exceeded; raised inside the task."""


class WorkerShutdown(SystemExit):
    """Raised to stop the worker gracefully."""


class WorkerTerminate(SystemExit):
    """Raised to stop the worker immediately."""


__all__ = [
    "AlreadyRegistered",
    "BackendError",
    "BackendGetMetaError",
    "BackendStoreError",
    "CeleriacError",
    "CeleryError",
    "ChordError",
    "ContentDisallowed",
    "DecodeError",
    "DuplicateNodenameWarning",
    "Ignore",
    "ImproperlyConfigured",
    "IncompleteStream",
    "InvalidMessageError",
    "MaxRetriesExceededError",
    "NotConfigured",
    "NotRegistered",
    "OperationalError",
    "QueueNotFound",
    "Reject",
    "Retry",
    "RetryTaskError",
    "SecurityError",
    "SoftTimeLimitExceeded",
    "TaskError",
    "TaskPredicate",
    "TaskRevokedError",
    "Terminated",
    "TimeLimitExceeded",
    "TimeoutError",
    "WorkerLostError",
    "WorkerShutdown",
    "WorkerTerminate",
]
