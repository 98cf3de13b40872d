"""Task results as Celery users know them (``celery.result``).

:class:`AsyncResult` reads one task's result from a result backend, :class:`ResultSet` and
:class:`GroupResult` many at once (one backend round trip per check, not one per task),
and :class:`EagerResult` holds the result of a task run in-process by ``apply()``.

A result that is ready is cached on the object; one that is not is read again on every
access. Failures are re-raised by ``get()`` as the task's own exception type when it can
be imported (see :mod:`celeriac.protocol.results`), with the worker's traceback attached
as a note and as the ``remote_traceback`` attribute.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from celeriac import states
from celeriac._state import App, get_current_app, get_current_task
from celeriac.backends.base import ResultBackend
from celeriac.exceptions import TimeoutError
from celeriac.protocol.results import Meta, exception_from_dict

if TYPE_CHECKING:
    from celeriac.transports.base import Transport

__all__ = [
    "AsyncResult",
    "EagerResult",
    "GroupResult",
    "ResultBase",
    "ResultSet",
    "allow_join_result",
    "assert_will_not_block",
    "denied_join_result",
    "result_from_tuple",
]

E_WOULDBLOCK = (
    "Never call result.get() within a task: a task that waits for another task can "
    "deadlock the worker (every slot waiting for tasks no slot is free to run). Link the "
    "tasks instead (chain: first.s() | second.s(), or a chord), or, if you are sure, pass "
    "disable_sync_subtasks=False or wrap the call in celeriac.result.allow_join_result(). "
    "See https://docs.celeryq.dev/en/stable/userguide/tasks.html"
    "#avoid-launching-synchronous-subtasks"
)

_join_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "celeriac_join_allowed", default=False
)

TaskCallback = Callable[[str, Any], object]
#: What ``as_tuple`` makes: ``((id, parent), members)`` with ``parent`` and each member
#: made the same way, ``members`` None for one task's result (a set has no head). Stored
#: in metas and saved groups, where it comes back as lists.
ResultTuple = tuple[tuple[str | None, "ResultTuple | None"] | None, list["ResultTuple"] | None]

T = TypeVar("T")


@contextlib.contextmanager
def _joins_allowed(allowed: bool) -> Iterator[None]:
    token = _join_allowed.set(allowed)
    try:
        yield
    finally:
        _join_allowed.reset(token)


def allow_join_result() -> contextlib.AbstractContextManager[None]:
    """Let code running inside a task wait for results (Celery's escape hatch)."""
    return _joins_allowed(True)


def denied_join_result() -> contextlib.AbstractContextManager[None]:
    """Undo :func:`allow_join_result` for a block."""
    return _joins_allowed(False)


def assert_will_not_block() -> None:
    """Raise :class:`RuntimeError` when called from a task running on a worker."""
    task = get_current_task()
    if task is None or _join_allowed.get():
        return
    # A task run in-process by apply() waits for nobody else's worker slot.
    if task.request.is_eager:
        return
    raise RuntimeError(E_WOULDBLOCK)


def _pending_meta(task_id: str) -> Meta:
    return {
        "status": states.PENDING,
        "result": None,
        "traceback": None,
        "children": [],
        "date_done": None,
        "task_id": task_id,
    }


def _as_exception(value: object, traceback: str | None) -> BaseException:
    exc = exception_from_dict(value)
    if traceback and getattr(exc, "remote_traceback", None) != traceback:
        with contextlib.suppress(Exception):  # an exception class may refuse attributes
            exc.remote_traceback = traceback  # type: ignore[attr-defined]
            exc.add_note(f"\nTraceback of the task, from the worker:\n{traceback.rstrip()}")
    return exc


class _Deadline:
    """An overall timeout, waited out in slices of at most ``interval`` seconds.

    Waiting in slices lets a caller look at other things between them (parents, other
    members' failures, ``on_interval``, asyncio cancellation).
    """

    __slots__ = ("at", "interval", "timeout")

    def __init__(self, timeout: float | None, interval: float) -> None:
        self.timeout = timeout
        self.at = None if timeout is None else time.monotonic() + timeout
        self.interval = interval

    def remaining(self) -> float | None:
        return None if self.at is None else max(self.at - time.monotonic(), 0.0)

    def next_slice(self) -> float:
        remaining = self.remaining()
        return self.interval if remaining is None else min(self.interval, remaining)

    def raise_if_passed(self, waiting_for: str) -> None:
        """After a slice timed out: raise the caller's TimeoutError if time is up."""
        if self.at is not None and time.monotonic() >= self.at:
            raise TimeoutError(
                f"The operation timed out after {self.timeout:g} s waiting for {waiting_for}"
            )


def _revoke(
    app: App | None,
    task_ids: str | list[str],
    connection: Transport | None,
    terminate: bool,
    signal: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    from celeriac.control.client import TERM_SIGNAME  # with app.control, not with results

    (app or get_current_app()).control.revoke(
        task_ids,
        connection=connection,
        terminate=terminate,
        signal=signal or TERM_SIGNAME,
        reply=wait,
        timeout=timeout,
    )


class ResultBase:
    """What every kind of result offers (``celery.result.ResultBase``)."""

    id: str | None = None
    parent: ResultBase | None = None

    def get(self, timeout: float | None = None, propagate: bool = True, **options: Any) -> Any:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def successful(self) -> bool:
        raise NotImplementedError

    def failed(self) -> bool:
        raise NotImplementedError

    def forget(self) -> None:
        raise NotImplementedError

    def maybe_throw(self, propagate: bool = True, callback: TaskCallback | None = None) -> Any:
        raise NotImplementedError

    def as_tuple(self) -> ResultTuple:
        raise NotImplementedError


class AsyncResult(ResultBase):
    """The result of a task sent to a worker, read from the result backend.

    The backend is ``backend=``, else ``app.backend``, else the current app's backend,
    looked up on first use.
    """

    #: Set by ``apply_async`` for tasks that store no result: ``get()`` returns None.
    ignored: bool = False

    def __init__(
        self,
        id: str,
        backend: ResultBackend | None = None,
        task_name: str | None = None,
        app: App | None = None,
        parent: ResultBase | None = None,
    ) -> None:
        if id is None:
            raise ValueError(f"AsyncResult needs a task id, not {id!r}")
        self.id: str = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._backend = backend
        self._cache: Meta | None = None

    # -- identity --------------------------------------------------------------------

    @property
    def task_id(self) -> str:
        return self.id

    @task_id.setter
    def task_id(self, value: str) -> None:
        self.id = value

    @property
    def backend(self) -> ResultBackend:
        if self._backend is None:
            self._backend = (self.app or get_current_app()).backend
        return self._backend

    @backend.setter
    def backend(self, value: ResultBackend) -> None:
        self._backend = value

    def as_tuple(self) -> ResultTuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), None)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"

    def __str__(self) -> str:
        return self.id

    def __copy__(self) -> AsyncResult:
        return type(self)(self.id, self._backend, self.task_name, self.app, self.parent)

    def __reduce__(self) -> tuple[type[AsyncResult], tuple[object, ...]]:
        # The backend holds connections: the unpickled copy finds its app's backend.
        return AsyncResult, (self.id, None, self.task_name, None, self.parent)

    # -- reading the meta ------------------------------------------------------------

    def _set_cache(self, meta: Meta) -> Meta:
        """Turn a stored meta into Python values; keep it when the state is final."""
        meta = meta.copy()
        if meta.get("status") in states.EXCEPTION_STATES and meta.get("result") is not None:
            meta["result"] = _as_exception(meta["result"], meta.get("traceback"))
        children = meta.get("children")
        if children:
            meta["children"] = [
                result_from_tuple(child, self.app, backend=self._backend) for child in children
            ]
        if meta.get("status") in states.READY_STATES:
            self._cache = meta
        return meta

    def _get_task_meta(self) -> Meta:
        if self._cache is not None:
            return self._cache
        (meta,) = self.backend.get([self.id])
        return _pending_meta(self.id) if meta is None else self._set_cache(meta)

    @property
    def state(self) -> str:
        """The task's state; ``PENDING`` also for ids the backend does not know."""
        return str(self._get_task_meta()["status"])

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception instance for a failed task."""
        return self._get_task_meta().get("result")

    info = result

    @property
    def traceback(self) -> str | None:
        return self._get_task_meta().get("traceback")

    @property
    def date_done(self) -> dt.datetime | None:
        value = self._get_task_meta().get("date_done")
        if value is None or isinstance(value, dt.datetime):
            return value
        return dt.datetime.fromisoformat(str(value))

    @property
    def children(self) -> list[ResultBase]:
        return list(self._get_task_meta().get("children") or [])

    # Stored with ``result_extended=True``; None otherwise.
    @property
    def name(self) -> str | None:
        return self._get_task_meta().get("name")

    @property
    def args(self) -> list[Any] | None:
        return self._get_task_meta().get("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        return self._get_task_meta().get("kwargs")

    @property
    def worker(self) -> str | None:
        return self._get_task_meta().get("worker")

    @property
    def retries(self) -> int | None:
        return self._get_task_meta().get("retries")

    @property
    def queue(self) -> str | None:
        return self._get_task_meta().get("queue")

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    # -- waiting ---------------------------------------------------------------------

    def maybe_throw(self, propagate: bool = True, callback: TaskCallback | None = None) -> Any:
        """Raise the task's exception if it failed (and ``propagate``); else its value."""
        meta = self._get_task_meta()
        value = meta.get("result")
        if propagate and meta["status"] in states.PROPAGATE_STATES:
            raise value if isinstance(value, BaseException) else Exception(value)
        if callback is not None:
            callback(self.id, value)
        return value

    def _maybe_reraise_parent_error(self) -> None:
        ancestors: list[ResultBase] = []
        node = self.parent
        while node is not None:
            ancestors.append(node)
            node = node.parent
        for ancestor in reversed(ancestors):
            ancestor.maybe_throw()

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        no_ack: bool = True,
        follow_parents: bool = True,
        callback: TaskCallback | None = None,
        on_message: Callable[[Meta], object] | None = None,
        on_interval: Callable[[], object] | None = None,
        disable_sync_subtasks: bool = True,
        **unused: object,
    ) -> Any:
        """Wait for the task and return its value, or raise its exception.

        Raises :class:`~celeriac.exceptions.TimeoutError` after ``timeout`` seconds.
        ``on_message`` receives the final meta; ``on_interval`` is called every
        ``interval`` seconds while waiting. ``no_ack`` is accepted for compatibility.
        """
        if self.ignored:
            return None
        if disable_sync_subtasks:
            assert_will_not_block()
        follow = follow_parents and propagate and self.parent is not None
        if follow:
            self._maybe_reraise_parent_error()
        if self._cache is None:
            meta = self._wait_for_meta(timeout, interval, follow, on_interval)
            if on_message is not None:
                on_message(meta)
            self._set_cache(meta)
        return self.maybe_throw(propagate=propagate, callback=callback)

    wait = get

    def _wait_for_meta(
        self,
        timeout: float | None,
        interval: float,
        follow_parents: bool,
        on_interval: Callable[[], object] | None,
    ) -> Meta:
        if not follow_parents and on_interval is None:
            (meta,) = self.backend.wait([self.id], timeout, interval)
            return meta
        deadline = _Deadline(timeout, interval)
        while True:
            try:
                (meta,) = self.backend.wait([self.id], deadline.next_slice(), interval)
                return meta
            except TimeoutError:
                deadline.raise_if_passed(f"task {self.id}")
            if follow_parents:
                self._maybe_reraise_parent_error()
            if on_interval is not None:
                on_interval()

    async def aget(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: TaskCallback | None = None,
        disable_sync_subtasks: bool = True,
    ) -> Any:
        """``get()`` for asyncio code: the event loop keeps running while it waits.

        The backend is waited on in a worker thread, ``interval`` seconds at a time, so
        that cancelling the awaiting task takes effect within ``interval``.
        """
        if self.ignored:
            return None
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = _Deadline(timeout, interval)
        while self._cache is None:
            slice_ = deadline.next_slice()
            try:
                (meta,) = await _to_thread(self.backend.wait, [self.id], slice_, interval)
            except TimeoutError:
                deadline.raise_if_passed(f"task {self.id}")
            else:
                self._set_cache(meta)
        return self.maybe_throw(propagate=propagate, callback=callback)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.aget().__await__()

    # -- acting on the task ----------------------------------------------------------

    def forget(self) -> None:
        """Delete the stored result (and the parents')."""
        self._cache = None
        if self.parent is not None:
            self.parent.forget()
        self.backend.forget([self.id])

    def revoke(
        self,
        connection: Transport | None = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Ask the workers not to run the task (``app.control.revoke``)."""
        _revoke(self.app, self.id, connection, terminate, signal, wait, timeout)


class EagerResult(AsyncResult):
    """The result of a task run in this process (``Task.apply``): nothing to wait for."""

    def __init__(
        self,
        id: str,
        ret_value: Any,
        state: str,
        traceback: str | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(id, task_name=name)
        self._cache = {
            **_pending_meta(id),
            "status": state,
            "result": ret_value,
            "traceback": traceback,
            "name": name,
        }

    # The meta is always cached, so nothing here ever asks a backend.

    def forget(self) -> None:
        """Nothing is stored."""

    def revoke(self, *args: object, **kwargs: object) -> None:
        if self._cache is not None:
            self._cache["status"] = states.REVOKED

    def __reduce__(self) -> tuple[type[EagerResult], tuple[object, ...]]:
        meta = self._get_task_meta()
        return EagerResult, (self.id, meta["result"], meta["status"], meta["traceback"])


def _fetch_metas(results: Sequence[AsyncResult]) -> list[Meta]:
    """The current metas of many results: one ``get`` per backend for those not cached."""
    metas: list[Meta | None] = [result._cache for result in results]
    by_backend: dict[int, tuple[ResultBackend, list[int]]] = {}
    for position, result in enumerate(results):
        if metas[position] is None:
            backend = result.backend
            by_backend.setdefault(id(backend), (backend, []))[1].append(position)
    for backend, positions in by_backend.values():
        stored = backend.get([results[position].id for position in positions])
        for position, meta in zip(positions, stored, strict=True):
            result = results[position]
            metas[position] = _pending_meta(result.id) if meta is None else result._set_cache(meta)
    return [meta for meta in metas if meta is not None]


def _raise_first_failure(results: Sequence[AsyncResult], metas: Sequence[Meta]) -> None:
    for result, meta in zip(results, metas, strict=True):
        if meta["status"] in states.PROPAGATE_STATES:
            result.maybe_throw()


def _pending_on_one_backend(
    results: Sequence[AsyncResult], metas: Sequence[Meta]
) -> list[AsyncResult]:
    """The results not ready yet, when they share one backend (else none: see the caller)."""
    pending = [
        result
        for result, meta in zip(results, metas, strict=True)
        if meta["status"] not in states.READY_STATES
    ]
    return pending if len({id(result.backend) for result in pending}) == 1 else []


def _wait_once(pending: Sequence[AsyncResult], timeout: float | None, interval: float) -> bool:
    """One ``wait`` on the backend the results share; False when it timed out."""
    try:
        stored = pending[0].backend.wait([result.id for result in pending], timeout, interval)
    except TimeoutError:
        return False
    for result, meta in zip(pending, stored, strict=True):
        result._set_cache(meta)
    return True


class ResultSet(ResultBase):
    """Many results, read and waited for together."""

    def __init__(
        self,
        results: Iterable[ResultBase] | None = None,
        app: App | None = None,
        backend: ResultBackend | None = None,
        **unused: object,
    ) -> None:
        self.app = app
        self._backend = backend
        self.results: list[ResultBase] = list(results or [])

    @property
    def backend(self) -> ResultBackend:
        if self._backend is not None:
            return self._backend
        if self.results and isinstance(self.results[0], AsyncResult | ResultSet):
            return self.results[0].backend
        return (self.app or get_current_app()).backend

    # -- the members -----------------------------------------------------------------

    def add(self, result: ResultBase) -> None:
        if result not in self.results:
            self.results.append(result)

    def update(self, results: Iterable[ResultBase]) -> None:
        self.results.extend(result for result in results if result not in self.results)

    def remove(self, result: ResultBase | str) -> None:
        member = result if isinstance(result, ResultBase) else AsyncResult(result, app=self.app)
        try:
            self.results.remove(member)
        except ValueError:
            raise KeyError(result) from None

    def discard(self, result: ResultBase | str) -> None:
        with contextlib.suppress(KeyError):
            self.remove(result)

    def clear(self) -> None:
        self.results.clear()

    def __iter__(self) -> Iterator[ResultBase]:
        return iter(self.results)

    def __getitem__(self, index: int) -> ResultBase:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ResultSet):
            return other.results == self.results
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        ids = ", ".join(str(getattr(result, "id", result)) for result in self.results)
        return f"<{type(self).__name__}: [{ids}]>"

    def as_tuple(self) -> ResultTuple:
        return (None, [result.as_tuple() for result in self.results])

    # -- states, with one backend round trip ----------------------------------------

    def _member_states(self) -> Iterator[tuple[ResultBase, str | None]]:
        """Each member with its state; None for nested sets, which answer for themselves."""
        singles = [result for result in self.results if isinstance(result, AsyncResult)]
        metas = {
            id(result): meta for result, meta in zip(singles, _fetch_metas(singles), strict=True)
        }
        for result in self.results:
            meta = metas.get(id(result))
            yield result, None if meta is None else str(meta["status"])

    def ready(self) -> bool:
        return all(
            result.ready() if state is None else state in states.READY_STATES
            for result, state in self._member_states()
        )

    def successful(self) -> bool:
        return all(
            result.successful() if state is None else state == states.SUCCESS
            for result, state in self._member_states()
        )

    def failed(self) -> bool:
        return any(
            result.failed() if state is None else state == states.FAILURE
            for result, state in self._member_states()
        )

    def waiting(self) -> bool:
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(
            (result.successful() if state is None else state == states.SUCCESS)
            for result, state in self._member_states()
        )

    def maybe_throw(self, propagate: bool = True, callback: TaskCallback | None = None) -> Any:
        for result in self.results:
            result.maybe_throw(propagate=propagate, callback=callback)

    def forget(self) -> None:
        singles = [result for result in self.results if isinstance(result, AsyncResult)]
        for result in singles:
            result._cache = None
        by_backend: dict[int, tuple[ResultBackend, list[str]]] = {}
        for result in singles:
            by_backend.setdefault(id(result.backend), (result.backend, []))[1].append(result.id)
        for backend, task_ids in by_backend.values():
            backend.forget(task_ids)
        for member in self.results:
            if not isinstance(member, AsyncResult):
                member.forget()

    def revoke(
        self,
        connection: Transport | None = None,
        terminate: bool = False,
        signal: str | None = None,
        wait: bool = False,
        timeout: float | None = None,
    ) -> None:
        task_ids = [str(result.id) for result in self.results]
        _revoke(self.app, task_ids, connection, terminate, signal, wait, timeout)

    # -- waiting ---------------------------------------------------------------------

    def join(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: TaskCallback | None = None,
        no_ack: bool = True,
        on_message: Callable[[Meta], object] | None = None,
        disable_sync_subtasks: bool = True,
        on_interval: Callable[[], object] | None = None,
        **unused: object,
    ) -> list[Any]:
        """Wait for every member; return their values in order.

        With ``propagate`` the first failed member's exception is raised as soon as a
        failure is seen. With ``callback``, it receives ``(task_id, value)`` per member
        and the returned list is empty, as in Celery.
        """
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = _Deadline(timeout, interval)
        singles = [result for result in self.results if isinstance(result, AsyncResult)]
        self._wait_for_singles(singles, deadline, propagate, on_interval)
        values: list[Any] = []
        for result in self.results:
            value = result.get(
                timeout=deadline.remaining(),
                propagate=propagate,
                interval=interval,
                on_message=on_message,
                disable_sync_subtasks=False,
            )
            if callback is not None:
                callback(str(result.id), value)
            else:
                values.append(value)
        return values

    get = join
    join_native = join

    @staticmethod
    def _wait_for_singles(
        singles: list[AsyncResult],
        deadline: _Deadline,
        propagate: bool,
        on_interval: Callable[[], object] | None,
    ) -> None:
        """Wait for all plain members with one backend call per round."""
        sliced = propagate or on_interval is not None
        while True:
            metas = _fetch_metas(singles)
            if propagate:
                _raise_first_failure(singles, metas)
            pending = _pending_on_one_backend(singles, metas)
            if not pending:
                return  # all ready, or spread over backends: the members wait one by one
            wait_for = deadline.next_slice() if sliced else deadline.remaining()
            if _wait_once(pending, wait_for, deadline.interval):
                continue
            deadline.raise_if_passed(f"{len(pending)} of {len(singles)} results")
            if on_interval is not None:
                on_interval()

    async def ajoin(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        callback: TaskCallback | None = None,
        disable_sync_subtasks: bool = True,
    ) -> list[Any]:
        """``join()`` for asyncio code, waiting in a thread ``interval`` at a time."""
        if disable_sync_subtasks:
            assert_will_not_block()
        deadline = _Deadline(timeout, interval)
        while True:
            try:
                joined: list[Any] = await _to_thread(
                    self.join,
                    deadline.next_slice(),
                    propagate,
                    interval,
                    callback,
                    disable_sync_subtasks=False,
                )
                return joined
            except TimeoutError:
                deadline.raise_if_passed(f"the {len(self.results)} results")

    aget = ajoin

    def __await__(self) -> Generator[Any, None, list[Any]]:
        return self.ajoin().__await__()

    @property
    def supports_native_join(self) -> bool:
        return True


class GroupResult(ResultSet):
    """The results of a ``group``, under the group's id; can be saved and restored."""

    def __init__(
        self,
        id: str | None = None,
        results: Iterable[ResultBase] | None = None,
        parent: ResultBase | None = None,
        app: App | None = None,
        backend: ResultBackend | None = None,
        **unused: object,
    ) -> None:
        super().__init__(results, app=app, backend=backend)
        self.id = id
        self.parent = parent

    def save(self, backend: ResultBackend | None = None) -> GroupResult:
        """Store the group so that :meth:`restore` finds it by id."""
        (backend or self.backend).save_group(self._group_id(), self.as_tuple())
        return self

    def delete(self, backend: ResultBackend | None = None) -> None:
        """Delete the saved group (not the members' results: see :meth:`forget`)."""
        (backend or self.backend).forget_group(self._group_id())

    @classmethod
    def restore(
        cls, id: str, backend: ResultBackend | None = None, app: App | None = None
    ) -> GroupResult | None:
        """The group saved under ``id``, or None."""
        if backend is None:
            backend = (app or get_current_app()).backend
        value = backend.get_group(id)
        if value is None:
            return None
        restored = result_from_tuple(value, app, backend=backend)
        return restored if isinstance(restored, GroupResult) else None

    def _group_id(self) -> str:
        if self.id is None:
            raise ValueError("this GroupResult has no id")
        return self.id

    def as_tuple(self) -> ResultTuple:
        parent = self.parent.as_tuple() if self.parent is not None else None
        return ((self.id, parent), [result.as_tuple() for result in self.results])

    @property
    def children(self) -> list[ResultBase]:
        return self.results

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self.id)

    def __repr__(self) -> str:
        ids = ", ".join(str(getattr(result, "id", result)) for result in self.results)
        return f"<{type(self).__name__}: {self.id} [{ids}]>"


def result_from_tuple(
    value: ResultBase | Sequence[Any],
    app: App | None = None,
    *,
    backend: ResultBackend | None = None,
) -> ResultBase:
    """Turn :meth:`~AsyncResult.as_tuple` output (or its JSON form) back into a result."""
    if isinstance(value, ResultBase):
        return value
    head, members = value
    task_id, parent = head if isinstance(head, list | tuple) else (head, None)
    parent_result = result_from_tuple(parent, app, backend=backend) if parent else None
    if members is not None:
        return GroupResult(
            task_id,
            [result_from_tuple(member, app, backend=backend) for member in members],
            parent=parent_result,
            app=app,
            backend=backend,
        )
    return AsyncResult(task_id, backend=backend, app=app, parent=parent_result)


async def _to_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # asyncio is imported on first use: it is a fifth of celeriac's import time.
    import asyncio

    return await asyncio.to_thread(function, *args, **kwargs)
