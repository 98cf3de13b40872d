"""``celeriac.result`` as Celery users know it, against real result backends (no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import pickle
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import _state, states
from celeriac.app import current as app_current
from celeriac.app.base import Celery
from celeriac.backends.base import BackendOptions, ResultBackend
from celeriac.backends.disabled import DisabledBackend
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.exceptions import TaskRevokedError, TimeoutError
from celeriac.protocol.results import build_meta, exception_to_dict
from celeriac.result import (
    AsyncResult,
    EagerResult,
    GroupResult,
    ResultSet,
    allow_join_result,
    result_from_tuple,
)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    created: ResultBackend
    if request.param == "memory":
        created = MemoryBackend(f"memory://test-result{tmp_path}", BackendOptions())
    else:
        created = SQLiteBackend(f"db+sqlite:///{tmp_path / 'results.db'}", BackendOptions())
    yield created
    created.close()


def new_id() -> str:
    return str(uuid.uuid4())


def store_success(backend: ResultBackend, value: Any = None, **extra: Any) -> str:
    task_id = new_id()
    backend.store([build_meta(task_id, states.SUCCESS, value, extra=extra)])
    return task_id


def store_failure(backend: ResultBackend, exc: BaseException, traceback: str) -> str:
    task_id = new_id()
    backend.store([build_meta(task_id, states.FAILURE, exception_to_dict(exc), traceback)])
    return task_id


class InsufficientFunds(Exception):
    """A task's own exception type, importable from this module."""


# -- one result ---------------------------------------------------------------------------


def test_unknown_task_is_pending(backend: ResultBackend) -> None:
    result = AsyncResult(new_id(), backend=backend)
    assert result.state == result.status == states.PENDING
    assert result.result is None and result.info is None and result.traceback is None
    assert not result.ready() and not result.successful() and not result.failed()
    assert result.date_done is None and result.children == []


def test_success(backend: ResultBackend) -> None:
    task_id = store_success(backend, {"sum": 3})
    result = AsyncResult(task_id, backend=backend)
    assert result.get(timeout=5) == {"sum": 3}
    assert result.state == states.SUCCESS and result.ready() and result.successful()
    assert not result.failed()
    assert isinstance(result.date_done, dt.datetime) and result.date_done.tzinfo is not None
    assert result.task_id == result.id == task_id


def test_ready_result_is_cached(backend: ResultBackend) -> None:
    task_id = store_success(backend, 1)
    result = AsyncResult(task_id, backend=backend)
    assert result.get() == 1
    backend.forget([task_id])
    assert result.get() == 1 and result.state == states.SUCCESS
    assert AsyncResult(task_id, backend=backend).state == states.PENDING


def test_failure_reraises_the_task_exception_with_its_traceback(backend: ResultBackend) -> None:
    remote = 'Traceback (most recent call last):\n  File "tasks.py", line 3\nValueError: bad'
    result = AsyncResult(store_failure(backend, ValueError("bad", 42), remote), backend=backend)
    with pytest.raises(ValueError) as raised:
        result.get(timeout=5)
    assert raised.value.args == ("bad", 42)
    assert raised.value.remote_traceback == remote  # type: ignore[attr-defined]
    assert any(remote in note for note in raised.value.__notes__)
    assert result.failed() and result.ready() and not result.successful()
    assert result.traceback == remote
    # Without propagation the exception is returned; the note is attached once.
    returned = result.get(propagate=False)
    assert returned is result.result and isinstance(returned, ValueError)
    assert len(returned.__notes__) == 1


def test_failure_of_an_importable_custom_exception_keeps_its_type(backend: ResultBackend) -> None:
    result = AsyncResult(
        store_failure(backend, InsufficientFunds("42 short"), "tb"), backend=backend
    )
    with pytest.raises(InsufficientFunds, match="42 short"):
        result.get()


def test_failure_of_an_unknown_exception_keeps_its_name(backend: ResultBackend) -> None:
    task_id = new_id()
    stored = {"exc_type": "CardDeclined", "exc_message": ["no"], "exc_module": "shop.payments"}
    backend.store([build_meta(task_id, states.FAILURE, stored, "tb")])
    with pytest.raises(Exception, match="no") as raised:
        AsyncResult(task_id, backend=backend).get()
    assert type(raised.value).__name__ == "CardDeclined"


def test_revoked_task_raises_task_revoked_error(backend: ResultBackend) -> None:
    task_id = new_id()
    revoked = exception_to_dict(TaskRevokedError("revoked"))
    backend.store([build_meta(task_id, states.REVOKED, revoked)])
    result = AsyncResult(task_id, backend=backend)
    with pytest.raises(TaskRevokedError):
        result.get()
    assert result.ready() and not result.failed()


def test_get_times_out(backend: ResultBackend) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        AsyncResult(new_id(), backend=backend).get(timeout=0.2, interval=0.05)
    assert time.monotonic() - started < 2


def test_get_waits_for_a_result_stored_later(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store([build_meta(task_id, states.STARTED, {"pid": 1})])
    result = AsyncResult(task_id, backend=backend)
    assert result.state == states.STARTED and result.info == {"pid": 1}
    writer = threading.Thread(
        target=backend.store, args=([build_meta(task_id, states.SUCCESS, "late")],)
    )
    writer.start()
    assert result.get(timeout=10, interval=0.05) == "late"
    writer.join()


def test_get_calls_callbacks(backend: ResultBackend) -> None:
    task_id = store_success(backend, 5)
    seen: list[Any] = []
    value = AsyncResult(task_id, backend=backend).get(
        callback=lambda tid, val: seen.append(("callback", tid, val)),
        on_message=lambda meta: seen.append(("message", meta["status"])),
    )
    assert value == 5
    assert seen == [("message", states.SUCCESS), ("callback", task_id, 5)]


def test_on_interval_is_called_while_waiting(backend: ResultBackend) -> None:
    ticks: list[float] = []
    with pytest.raises(TimeoutError):
        AsyncResult(new_id(), backend=backend).get(
            timeout=0.3, interval=0.05, on_interval=lambda: ticks.append(time.monotonic())
        )
    assert len(ticks) >= 2


def test_get_raises_a_failed_parent_error(backend: ResultBackend) -> None:
    parent = AsyncResult(store_failure(backend, KeyError("parent"), "tb"), backend=backend)
    child = AsyncResult(new_id(), backend=backend, parent=parent)
    started = time.monotonic()
    with pytest.raises(KeyError, match="parent"):
        child.get(timeout=10, interval=0.05)
    assert time.monotonic() - started < 5
    # Not following the parents, the child is simply not ready.
    with pytest.raises(TimeoutError):
        child.get(timeout=0.1, interval=0.05, follow_parents=False)


def test_extended_fields(backend: ResultBackend) -> None:
    task_id = store_success(
        backend,
        3,
        name="proj.add",
        args=[1, 2],
        kwargs={"z": 0},
        worker="w1@host",
        retries=1,
        queue="q",
    )
    result = AsyncResult(task_id, backend=backend)
    assert (result.name, result.args, result.kwargs) == ("proj.add", [1, 2], {"z": 0})
    assert (result.worker, result.retries, result.queue) == ("w1@host", 1, "q")


def test_children_are_results(backend: ResultBackend) -> None:
    child_id, group_id, member_id = new_id(), new_id(), new_id()
    children = [
        [[child_id, None], None],
        [[group_id, None], [[[member_id, None], None]]],
    ]
    task_id = new_id()
    backend.store([build_meta(task_id, states.SUCCESS, None, children=children)])
    found = AsyncResult(task_id, backend=backend).children
    assert [type(child) for child in found] == [AsyncResult, GroupResult]
    assert found[0].id == child_id
    assert isinstance(found[1], GroupResult) and found[1].results == [AsyncResult(member_id)]


def test_forget_deletes_the_result(backend: ResultBackend) -> None:
    task_id = store_success(backend, 1)
    result = AsyncResult(task_id, backend=backend)
    assert result.get() == 1
    result.forget()
    assert result.state == states.PENDING
    assert backend.get([task_id]) == [None]


def test_get_inside_a_task_is_refused(backend: ResultBackend, tmp_path: Path) -> None:
    app = Celery("t", backend=f"memory://inside{tmp_path}", set_as_current=False)
    result = AsyncResult(store_success(backend, 1), backend=backend)

    @app.task
    def waits_for_another() -> Any:
        return result.get()

    # As on a worker: the task is running, and its request is not eager.
    task_token = _state.current_task_var.set(waits_for_another)
    request_token = waits_for_another.push_request(id=new_id(), is_eager=False)
    try:
        with pytest.raises(RuntimeError, match=r"Never call result\.get\(\) within a task"):
            result.get()
        assert result.get(disable_sync_subtasks=False) == 1
        with allow_join_result():
            assert result.get() == 1
    finally:
        waits_for_another.pop_request(request_token)
        _state.current_task_var.reset(task_token)
    # apply() runs the task here: nothing can deadlock, so waiting is allowed.
    assert waits_for_another.apply().get() == 1


def test_identity_tuples_and_pickling(backend: ResultBackend) -> None:
    parent = AsyncResult("p", backend=backend)
    result = AsyncResult("c", backend=backend, parent=parent)
    assert result == AsyncResult("c") and result == "c" and result != AsyncResult("x")
    assert hash(result) == hash(AsyncResult("c")) and len({result, AsyncResult("c")}) == 1
    assert str(result) == "c" and repr(result) == "<AsyncResult: c>"
    assert result.as_tuple() == (("c", (("p", None), None)), None)
    rebuilt = result_from_tuple(result.as_tuple(), backend=backend)
    assert rebuilt == result and rebuilt.parent == parent
    copied = pickle.loads(pickle.dumps(result))
    assert copied == result and copied.parent == parent


def test_id_is_required() -> None:
    with pytest.raises(ValueError, match="task id"):
        AsyncResult(None)  # type: ignore[arg-type]


def test_await_and_aget(backend: ResultBackend) -> None:
    task_id, done_id = new_id(), store_success(backend, "done")

    async def main() -> tuple[Any, Any]:
        async def store_soon() -> None:
            await asyncio.to_thread(backend.store, [build_meta(task_id, states.SUCCESS, 7)])

        # The result is stored by a coroutine on the same loop, so aget must not block it.
        storing = asyncio.create_task(store_soon())
        value = await AsyncResult(task_id, backend=backend).aget(timeout=10, interval=0.05)
        await storing
        with pytest.raises(TimeoutError):
            await AsyncResult(new_id(), backend=backend).aget(timeout=0.1, interval=0.05)
        return value, await AsyncResult(done_id, backend=backend)

    assert asyncio.run(main()) == (7, "done")


# -- where the backend comes from -----------------------------------------------------------


def test_backend_comes_from_the_app(tmp_path: Path) -> None:
    app = Celery("t", backend=f"memory://app{tmp_path}", set_as_current=False)
    task_id = store_success(app.backend, "via app")
    assert AsyncResult(task_id, app=app).get() == "via app"
    assert app.AsyncResult(task_id).get() == "via app"


def test_backend_comes_from_the_current_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_current, "_current_app", None)
    app = Celery("t", backend=f"memory://current{tmp_path}", set_as_current=True)
    task_id = store_success(app.backend, "current")
    assert AsyncResult(task_id).get() == "current"


def test_disabled_backend_explains_itself() -> None:
    result = AsyncResult(new_id(), backend=DisabledBackend())
    with pytest.raises(NotImplementedError, match="No result backend is configured"):
        result.get()


# -- eager results ------------------------------------------------------------------------


def test_eager_result_needs_no_backend() -> None:
    done = EagerResult("e1", 5, states.SUCCESS, name="proj.five")
    assert done.get() == 5 and done.successful() and done.name == "proj.five"
    failed = EagerResult("e2", ZeroDivisionError("zero"), states.FAILURE, traceback="tb")
    with pytest.raises(ZeroDivisionError):
        failed.get()
    assert failed.failed() and isinstance(failed.result, ZeroDivisionError)
    copied = pickle.loads(pickle.dumps(done))
    assert copied.get() == 5


# -- many results ---------------------------------------------------------------------------


def test_group_join_returns_values_in_order(backend: ResultBackend) -> None:
    ids = [new_id() for _ in range(5)]
    group = GroupResult(new_id(), [AsyncResult(task_id, backend=backend) for task_id in ids])
    assert group.waiting() and not group.ready() and group.completed_count() == 0
    backend.store([build_meta(task_id, states.SUCCESS, i) for i, task_id in enumerate(ids[:3])])
    assert group.completed_count() == 3 and not group.ready()
    writer = threading.Thread(
        target=backend.store,
        args=([build_meta(ids[4], states.SUCCESS, 4), build_meta(ids[3], states.SUCCESS, 3)],),
    )
    writer.start()
    assert group.get(timeout=10, interval=0.05) == [0, 1, 2, 3, 4]
    writer.join()
    assert group.ready() and group.successful() and not group.failed()
    assert len(group) == 5 and [r.id for r in group] == ids and group[0].id == ids[0]


def test_join_raises_the_first_failure_without_waiting_for_the_rest(
    backend: ResultBackend,
) -> None:
    failed_id = store_failure(backend, ValueError("member"), "tb")
    group = ResultSet(
        [AsyncResult(new_id(), backend=backend), AsyncResult(failed_id, backend=backend)]
    )
    started = time.monotonic()
    with pytest.raises(ValueError, match="member"):
        group.join(timeout=30, interval=0.05)
    assert time.monotonic() - started < 5
    assert group.failed() and not group.successful()


def test_join_without_propagation_returns_exceptions(backend: ResultBackend) -> None:
    ok_id = store_success(backend, "ok")
    failed_id = store_failure(backend, ValueError("member"), "tb")
    group = ResultSet(
        [AsyncResult(ok_id, backend=backend), AsyncResult(failed_id, backend=backend)]
    )
    values = group.join(propagate=False, timeout=5)
    assert values[0] == "ok" and isinstance(values[1], ValueError)
    received: list[tuple[str, Any]] = []
    assert group.join(propagate=False, callback=lambda tid, v: received.append((tid, v))) == []
    assert [task_id for task_id, _ in received] == [ok_id, failed_id]


def test_join_times_out(backend: ResultBackend) -> None:
    group = ResultSet([AsyncResult(new_id(), backend=backend)])
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        group.join(timeout=0.2, interval=0.05)
    assert time.monotonic() - started < 2


def test_nested_groups_join(backend: ResultBackend) -> None:
    inner = GroupResult(new_id(), [AsyncResult(store_success(backend, "in"), backend=backend)])
    outer = ResultSet([AsyncResult(store_success(backend, "out"), backend=backend), inner])
    assert outer.join(timeout=5) == ["out", ["in"]]
    assert outer.ready() and outer.completed_count() == 2


def test_group_save_and_restore(backend: ResultBackend) -> None:
    ids = [store_success(backend, 1), store_success(backend, 2)]
    group_id = new_id()
    group = GroupResult(group_id, [AsyncResult(task_id, backend=backend) for task_id in ids])
    assert group.save() is group
    # Stored in Celery's form, so Celery peers restore it too.
    assert backend.get_group(group_id) == [
        [group_id, None],
        [[[ids[0], None], None], [[ids[1], None], None]],
    ]
    restored = GroupResult.restore(group_id, backend=backend)
    assert restored == group and restored is not None
    assert restored.join(timeout=5) == [1, 2]
    restored.delete()
    assert GroupResult.restore(group_id, backend=backend) is None


def test_group_forget_deletes_member_results(backend: ResultBackend) -> None:
    ids = [store_success(backend, 1), store_success(backend, 2)]
    group = GroupResult(new_id(), [AsyncResult(task_id, backend=backend) for task_id in ids])
    assert group.join() == [1, 2]
    group.forget()
    assert backend.get(ids) == [None, None]
    assert not group.ready()


def test_result_set_membership(backend: ResultBackend) -> None:
    first, second = AsyncResult("a", backend=backend), AsyncResult("b", backend=backend)
    results = ResultSet([first])
    results.add(second)
    results.add(AsyncResult("a"))  # already there
    assert [r.id for r in results] == ["a", "b"]
    results.discard("zzz")
    results.remove("a")
    assert results.results == [second]
    with pytest.raises(KeyError):
        results.remove("a")
    results.clear()
    assert len(results) == 0


def test_group_tuple_roundtrip(backend: ResultBackend) -> None:
    group = GroupResult("g", [AsyncResult("a"), AsyncResult("b")], parent=AsyncResult("p"))
    value = group.as_tuple()
    assert value == (("g", (("p", None), None)), [(("a", None), None), (("b", None), None)])
    rebuilt = result_from_tuple(value, backend=backend)
    assert (
        isinstance(rebuilt, GroupResult) and rebuilt == group and rebuilt.parent == AsyncResult("p")
    )
    assert group.children == group.results


def test_await_a_group(backend: ResultBackend) -> None:
    ids = [store_success(backend, n) for n in range(3)]
    group = GroupResult(new_id(), [AsyncResult(task_id, backend=backend) for task_id in ids])

    async def main() -> list[Any]:
        return await group

    assert asyncio.run(main()) == [0, 1, 2]
