"""Run one task: the request context, hooks, signals, result storage and workflow steps.

This is the worker's hot path, shared with ``Task.apply()``. What depends only on the task
type (its function, flags, whether hooks are overridden, whether signals have receivers) is
worked out once per task in :class:`TaskRunner`; per call there is one ``Context``, the
function call, and one result meta handed to a :class:`ResultSink` that may batch stores.
"""

from __future__ import annotations

import inspect
import logging
import os
import random
import threading
import time
import traceback as tb
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from celeriac import _state, signals, states
from celeriac.app.next_steps import NextSteps
from celeriac.app.task import Context, Task
from celeriac.exceptions import Ignore, Reject, Retry
from celeriac.protocol.message import safe_repr
from celeriac.protocol.results import Meta, build_meta, exception_to_dict

if TYPE_CHECKING:
    import asyncio

    from celeriac.app.base import Celery
    from celeriac.backends.base import ResultBackend
    from celeriac.result import EagerResult

logger = logging.getLogger("celeriac.worker")


class ExceptionInfo:
    """The exception of a failed task and its formatted traceback (Celery's ``einfo``)."""

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc
        self.type = type(exc)
        self.traceback = "".join(tb.format_exception(exc))

    def __str__(self) -> str:
        return self.traceback


@dataclass(slots=True)
class Outcome:
    """What became of one execution, for the worker (acks, logs, counters)."""

    state: str
    retval: object = None
    exception: BaseException | None = None
    traceback: str | None = None
    runtime: float = 0.0
    #: ``Reject``: requeue the message instead of acking it.
    requeue: bool | None = None


#: What a failure stored in place of an unserializable result keeps of the original meta.
_FAILURE_KEEPS = ("reply_to", "parent_id", "group_id")


def store_results(backend: ResultBackend, metas: list[Meta]) -> None:
    """Store result metas in one backend call, never raising into the caller.

    A result the serializer cannot encode is stored as the task's failure (as Celery does)
    without losing the others of its batch, and a backend that cannot be reached is logged.
    """
    try:
        backend.store(metas)
    except (TypeError, ValueError):  # what serializers raise for values they cannot encode
        _store_each(backend, metas)
    except Exception as exc:
        logger.error("Cannot store %d task result(s) in %s: %s", len(metas), backend.url, exc)


def _store_each(backend: ResultBackend, metas: list[Meta]) -> None:
    for meta in metas:
        try:
            backend.store([meta])
            continue
        except (TypeError, ValueError) as exc:
            error = TypeError(f"the task's result cannot be serialized: {exc}")
        except Exception as exc:
            logger.error("Cannot store a task result in %s: %s", backend.url, exc)
            continue
        task_id = meta.get("task_id") or ""
        logger.error("Task %s: %s: stored as its failure", task_id, error)
        failure = build_meta(
            task_id,
            states.FAILURE,
            exception_to_dict(error),
            f"{type(error).__name__}: {error}",
            extra={key: meta.get(key) for key in _FAILURE_KEEPS if key in meta},
        )
        try:
            backend.store([failure])
        except Exception as final:
            logger.error("Cannot store a task result in %s: %s", backend.url, final)


class ResultSink(Protocol):
    """Where a run hands the result metas to store: at once (:class:`StoreAtOnce`), or
    gathered for one backend call per batch (the worker's ``BatchingSink``)."""

    def add(self, meta: Meta) -> None: ...

    def flush(self) -> None:
        """Store what was added before returning: a STARTED state while the task runs, a
        chord member before the chord counts it."""
        ...


class StoreAtOnce:
    """Stores each meta as it is added (``Task.apply()``, and the threads pool, which runs
    one job at a time)."""

    def __init__(self, backend: ResultBackend) -> None:
        self.backend = backend

    def add(self, meta: Meta) -> None:
        store_results(self.backend, [meta])

    def flush(self) -> None:
        """Nothing waits: each meta was stored when it was added."""


def _overrides(task: Task[Any, Any], hook: str) -> bool:
    return getattr(type(task), hook) is not getattr(Task, hook)


_event_loops: dict[int, asyncio.AbstractEventLoop] = {}  # asyncio: imported on first use


def run_coroutine(coroutine: Awaitable[object]) -> object:
    """Run an ``async def`` task's coroutine on this thread's long-lived event loop."""
    key = threading.get_ident()
    loop = _event_loops.get(key)
    if loop is None or loop.is_closed():
        import asyncio

        loop = _event_loops[key] = asyncio.new_event_loop()
    return loop.run_until_complete(coroutine)


class TaskRunner:
    """Executes calls of one task type; built once per task per worker process."""

    def __init__(
        self, app: Celery, task: Task[Any, Any], hostname: str = "", eager: bool = False
    ) -> None:
        conf = app.conf
        self.app = app
        self.task = task
        self.name = task.name
        self.fun: Callable[..., Any] = task.run
        self.hostname = hostname
        self.eager = eager
        self.is_async = inspect.iscoroutinefunction(getattr(task, "__wrapped__", None))
        backend_enabled = app.backend.capabilities.enabled if not eager else True
        ignore = task.ignore_result if task.ignore_result is not None else conf.task_ignore_result
        self.ignore_result = bool(ignore)
        self.backend_enabled = backend_enabled
        store_errors = task.store_errors_even_if_ignored
        self.store_errors = bool(
            conf.task_store_errors_even_if_ignored if store_errors is None else store_errors
        )
        track = task.track_started
        self.track_started = bool(conf.task_track_started if track is None else track)
        self.extended = bool(conf.result_extended)
        # rpc:// sends each result to the reply queue the request names.
        self.needs_reply_to = not eager and app.backend.capabilities.needs_reply_to
        self.hooks = {
            hook: _overrides(task, hook)
            for hook in ("before_start", "on_success", "on_failure", "on_retry", "after_return")
        }
        self.autoretry_for = tuple(task.autoretry_for)
        self.dont_autoretry_for = tuple(task.dont_autoretry_for)
        self.throws = tuple(task.throws)
        self.request_var = task._request_var
        self.pid = os.getpid()
        self.next_steps = NextSteps(app, task.name)

    # -- one call
    def __call__(
        self,
        task_id: str,
        args: Sequence[object],
        kwargs: Mapping[str, object],
        request: Mapping[str, object],
        sink: ResultSink | None,
    ) -> Outcome:
        context = Context(
            request,
            id=task_id,
            args=args,
            kwargs=kwargs,
            called_directly=False,
            hostname=self.hostname,
        )
        store = sink is not None and self._stores_result(context)
        token = self.request_var.set(context)
        task_token = _state.current_task_var.set(self.task)
        prerun = signals.task_prerun.has_listeners()
        if prerun:
            signals.task_prerun.send(
                sender=self.task, task_id=task_id, task=self.task, args=args, kwargs=kwargs
            )
        try:
            outcome = self._run(context, store, sink)
        finally:
            self.request_var.reset(token)
            _state.current_task_var.reset(task_token)
        if self.hooks["after_return"]:
            einfo = ExceptionInfo(outcome.exception) if outcome.exception else None
            self._safely(
                self.task.after_return,
                outcome.state,
                outcome.retval,
                task_id,
                args,
                kwargs,
                einfo,
            )
        if prerun or signals.task_postrun.has_listeners():
            self._send_postrun(outcome, task_id, args, kwargs)
        return outcome

    def _stores_result(self, context: Context) -> bool:
        return self.backend_enabled and not (self.ignore_result or context.ignore_result)

    def _run(self, context: Context, store: bool, sink: ResultSink | None) -> Outcome:
        """The task's function, with what goes before it; what it raises becomes the outcome."""
        started = time.monotonic()
        try:
            if store and self.track_started:
                assert sink is not None
                self._store_started(context, sink)
            if self.hooks["before_start"]:
                self.task.before_start(context.id or "", context.args, context.kwargs)
            retval = self.fun(*context.args, **context.kwargs)
            if self.is_async or inspect.iscoroutine(retval):
                retval = run_coroutine(retval)
        except BaseException as exc:
            return self._on_exception(exc, context, store, sink, started)
        outcome = Outcome(states.SUCCESS, retval, runtime=time.monotonic() - started)
        self._on_success(retval, context, store, sink)
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "Task %s[%s] succeeded in %.6fs: %s",
                self.name,
                context.id,
                outcome.runtime,
                safe_repr(retval, self.task.resultrepr_maxsize),
            )
        return outcome

    def _store_started(self, context: Context, sink: ResultSink) -> None:
        extra = self._meta_extra(context)
        state = {"pid": self.pid, "hostname": self.hostname}
        sink.add(build_meta(context.id or "", states.STARTED, state, extra=extra))
        sink.flush()  # visible while the task runs, not after

    def _send_postrun(
        self, outcome: Outcome, task_id: str, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> None:
        signals.task_postrun.send(
            sender=self.task,
            task_id=task_id,
            task=self.task,
            args=args,
            kwargs=kwargs,
            retval=outcome.retval,
            state=outcome.state,
        )

    def _meta_extra(self, context: Context) -> dict[str, object]:
        extra: dict[str, object] = {}
        if self.needs_reply_to and context.reply_to:
            extra["reply_to"] = context.reply_to
        if context.parent_id:
            extra["parent_id"] = context.parent_id
        if context.group:
            extra["group_id"] = context.group
        if self.extended:
            extra.update(
                name=self.name,
                args=list(context.args),
                kwargs=dict(context.kwargs),
                worker=self.hostname,
                retries=context.retries,
                queue=(context.delivery_info or {}).get("routing_key"),
            )
        return extra

    def _safely(self, hook: Callable[..., object], *args: object) -> None:
        try:
            hook(*args)
        except Exception:
            logger.exception("Task %s: hook %s raised", self.name, hook.__name__)

    # -- success
    def _on_success(
        self, retval: object, context: Context, store: bool, sink: ResultSink | None
    ) -> None:
        task_id = context.id or ""
        meta = None
        if store or context.chord:
            meta = build_meta(task_id, states.SUCCESS, retval, extra=self._meta_extra(context))
            if store:
                assert sink is not None
                sink.add(meta)
        if self.hooks["on_success"]:
            self._safely(self.task.on_success, retval, task_id, context.args, context.kwargs)
        if signals.task_success.has_listeners():
            signals.task_success.send(sender=self.task, result=retval)
        self.next_steps.apply_next(retval, context)
        if context.chord:
            if sink is not None:
                sink.flush()  # members must be stored before the body can read them
            self._chord_part(context, meta)

    def _chord_part(self, context: Context, meta: Meta | None) -> None:
        if context.chord and context.group:
            member_meta = (
                meta.copy() if meta else build_meta(context.id or "", states.SUCCESS, None)
            )
            self.next_steps.count_chord_member(
                context.chord, context.group, context.group_index or 0, member_meta, context.id
            )

    # -- failure
    def _on_exception(
        self,
        exc: BaseException,
        context: Context,
        store: bool,
        sink: ResultSink | None,
        started: float,
    ) -> Outcome:
        runtime = time.monotonic() - started
        if isinstance(exc, Retry):
            return self._on_retry(exc, context, store, sink, runtime)
        if isinstance(exc, Ignore):
            return Outcome(states.IGNORED, runtime=runtime)
        if isinstance(exc, Reject):
            return Outcome(states.REJECTED, exception=exc, runtime=runtime, requeue=exc.requeue)
        if (
            self.autoretry_for
            and isinstance(exc, self.autoretry_for)
            and not isinstance(exc, self.dont_autoretry_for)
            and not context.is_eager
        ):
            try:
                self._autoretry(exc, context)
            except Retry as retry:
                return self._on_retry(retry, context, store, sink, runtime)
            except BaseException as final:
                exc = final
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise exc
        return self._on_failure(exc, context, store, sink, runtime)

    def _autoretry(self, exc: BaseException, context: Context) -> None:
        task = self.task
        options = dict(task.retry_kwargs)
        if task.retry_backoff and "countdown" not in options:
            factor = 1 if task.retry_backoff is True else float(task.retry_backoff)
            countdown = min(task.retry_backoff_max, factor * (2**context.retries))
            if task.retry_jitter:
                countdown = random.randrange(int(countdown) + 1)
            options["countdown"] = countdown
        token = self.request_var.set(context)
        try:
            task.retry(exc=exc, **options)
        finally:
            self.request_var.reset(token)

    def _on_retry(
        self, retry: Retry, context: Context, store: bool, sink: ResultSink | None, runtime: float
    ) -> Outcome:
        reason = retry.exc if retry.exc is not None else retry
        einfo = ExceptionInfo(reason)
        if store and sink is not None:
            sink.add(
                build_meta(
                    context.id or "",
                    states.RETRY,
                    exception_to_dict(reason),
                    einfo.traceback,
                    extra=self._meta_extra(context),
                )
            )
        if self.hooks["on_retry"]:
            self._safely(
                self.task.on_retry, reason, context.id, context.args, context.kwargs, einfo
            )
        if signals.task_retry.has_listeners():
            signals.task_retry.send(sender=self.task, request=context, reason=reason, einfo=einfo)
        logger.info("Task %s[%s] retry: %s", self.name, context.id, retry)
        return Outcome(states.RETRY, exception=retry, traceback=einfo.traceback, runtime=runtime)

    def _on_failure(
        self,
        exc: BaseException,
        context: Context,
        store: bool,
        sink: ResultSink | None,
        runtime: float,
    ) -> Outcome:
        einfo = ExceptionInfo(exc)
        task_id = context.id or ""
        meta = build_meta(
            task_id,
            states.FAILURE,
            exception_to_dict(exc),
            einfo.traceback,
            extra=self._meta_extra(context),
        )
        if sink is not None and self.backend_enabled and (store or self.store_errors):
            sink.add(meta)
        if self.hooks["on_failure"]:
            self._safely(self.task.on_failure, exc, task_id, context.args, context.kwargs, einfo)
        if signals.task_failure.has_listeners():
            signals.task_failure.send(
                sender=self.task,
                task_id=task_id,
                exception=exc,
                args=context.args,
                kwargs=context.kwargs,
                traceback=exc.__traceback__,
                einfo=einfo,
            )
        self.next_steps.after_failure(exc, einfo.traceback, context)
        if context.chord:
            if sink is not None:
                sink.flush()
            self._chord_part(context, meta)
        if not isinstance(exc, self.throws):
            logger.error(
                "Task %s[%s] raised unexpected: %r\n%s", self.name, task_id, exc, einfo.traceback
            )
        else:
            logger.info("Task %s[%s] raised expected: %r", self.name, task_id, exc)
        return Outcome(states.FAILURE, exception=exc, traceback=einfo.traceback, runtime=runtime)


def apply_eagerly(
    task: Task[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    task_id: str,
    retries: int = 0,
    throw: bool | None = None,
    link: Any = None,
    link_error: Any = None,
    options: Mapping[str, Any] | None = None,
) -> EagerResult:
    """``Task.apply()``: run in this process through the same path as the worker."""
    from celeriac.result import EagerResult

    request = _eager_request(task, task_id, retries, link, link_error, options or {})
    runner = TaskRunner(task.app, task, eager=True)
    outcome = runner(task_id, args, kwargs, request, _eager_sink(task))
    propagate = bool(task.app.conf.task_eager_propagates) if throw is None else throw
    if propagate and outcome.exception is not None and outcome.state == states.FAILURE:
        raise outcome.exception
    value = outcome.retval if outcome.state == states.SUCCESS else outcome.exception
    return EagerResult(task_id, value, outcome.state, traceback=outcome.traceback, name=task.name)


def _eager_request(
    task: Task[Any, Any],
    task_id: str,
    retries: int,
    link: Any,
    link_error: Any,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``task.request`` of an eager call: its ids from the options, else from the task
    running in this thread, if one applies it."""
    parent = _state.get_current_task()
    parent_request = parent.request if parent is not None else None
    request: dict[str, Any] = {
        "id": task_id,
        "task": task.name,
        "retries": retries,
        "is_eager": True,
        "root_id": options.get("root_id") or getattr(parent_request, "root_id", None) or task_id,
        "parent_id": options.get("parent_id") or getattr(parent_request, "id", None),
        "group": options.get("group_id"),
        "group_index": options.get("group_index"),
        "callbacks": _as_list(link),
        "errbacks": _as_list(link_error),
        "chain": options.get("chain"),
        "headers": options.get("headers"),
        "delivery_info": {"is_eager": True},
        "ignore_result": options.get("ignore_result", False),
    }
    if options.get("headers"):
        request.update(options["headers"])
    return request


def _eager_sink(task: Task[Any, Any]) -> StoreAtOnce | None:
    """Where an eager call's result goes: nowhere, unless ``task_store_eager_result``."""
    store = task.store_eager_result
    if store is None:
        store = task.app.conf.task_store_eager_result
    if store and task.app.backend.capabilities.enabled:
        return StoreAtOnce(task.app.backend)
    return None


def _as_list(value: Any) -> list[Any] | None:
    if not value:
        return None
    return [value] if isinstance(value, Mapping) else list(value)


__all__ = [
    "ExceptionInfo",
    "Outcome",
    "ResultSink",
    "StoreAtOnce",
    "TaskRunner",
    "apply_eagerly",
    "run_coroutine",
    "store_results",
]
