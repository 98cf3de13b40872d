"""Results stored by one library, read by the other, in one Redis result database.

No worker here: each side stores results the way its worker does (celeriac: metas through
its backend; Celery: ``store_result``/``mark_as_*``), the other side reads them through
its own ``AsyncResult``/``GroupResult``. Workers storing for the other side's clients are
covered by the two client/worker modules beside this one.
"""

from __future__ import annotations

import datetime as dt
import math
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import celeriac
from celeriac import states
from celeriac.exceptions import TaskRevokedError
from celeriac.protocol.results import build_meta, exception_to_dict
from tests.interop.cases import ARGS, KWARGS
from tests.interop.support import REDIS_RESULTS, TIMEOUT, close_celery_app

celery = pytest.importorskip("celery")
celery_exceptions = pytest.importorskip("celery.exceptions")

pytestmark = [pytest.mark.celery, pytest.mark.redis]

VALUE = {"args": ARGS, "kwargs": KWARGS}


@pytest.fixture(scope="module")
def ours(interop_redis: object, interop_project: Path) -> Iterator[celeriac.Celery]:
    app = celeriac.Celery("celeriac_reader", broker="memory://", backend=REDIS_RESULTS)
    yield app
    app.close()


@pytest.fixture(scope="module")
def theirs(interop_redis: object, interop_project: Path) -> Iterator[Any]:
    app = celery.Celery("celery_reader", broker="memory://", backend=REDIS_RESULTS)
    yield app
    close_celery_app(app)


def new_id() -> str:
    return str(uuid.uuid4())


def store(app: celeriac.Celery, task_id: str, status: str, result: Any, **kwargs: Any) -> None:
    """Store a meta as the celeriac worker does."""
    app.backend.store([build_meta(task_id, status, result, **kwargs)])


def raised(exc: BaseException) -> tuple[BaseException, str]:
    """``exc`` raised and caught, with its traceback text."""
    try:
        raise exc
    except BaseException as caught:
        return caught, traceback.format_exc()


# -- celeriac stores, Celery reads ------------------------------------------------------------


def test_celery_reads_a_success_with_every_type(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    store(ours, task_id, states.SUCCESS, VALUE)
    result = theirs.AsyncResult(task_id)
    assert result.get(timeout=TIMEOUT) == VALUE
    assert result.state == "SUCCESS"
    assert isinstance(result.date_done, dt.datetime)
    assert result.date_done.tzinfo is not None


def test_celery_raises_a_failure_stored_by_celeriac(ours: celeriac.Celery, theirs: Any) -> None:
    import interop_errors

    for exc in (ValueError("bad ✗", 3), interop_errors.InteropError("custom", {"k": [1]})):
        task_id = new_id()
        caught, text = raised(exc)
        store(ours, task_id, states.FAILURE, exception_to_dict(caught), traceback=text)
        result = theirs.AsyncResult(task_id)
        with pytest.raises(type(exc)) as error:
            result.get(timeout=TIMEOUT)
        assert error.value.args == exc.args
        assert result.state == "FAILURE"
        assert result.traceback == text


def test_celery_sees_a_task_revoked_by_celeriac(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    store(ours, task_id, states.REVOKED, exception_to_dict(TaskRevokedError("expired")))
    result = theirs.AsyncResult(task_id)
    with pytest.raises(celery_exceptions.TaskRevokedError, match="expired"):
        result.get(timeout=TIMEOUT)
    assert result.state == "REVOKED"


def test_celery_reads_states_that_are_not_ready(ours: celeriac.Celery, theirs: Any) -> None:
    progress, started, retried = new_id(), new_id(), new_id()
    store(ours, progress, "PROGRESS", {"done": 3, "of": 10})
    store(ours, started, states.STARTED, {"pid": 123, "hostname": "celeriac@here"})
    retry_exc, _ = raised(ValueError("again"))
    store(ours, retried, states.RETRY, exception_to_dict(retry_exc))
    assert theirs.AsyncResult(progress).state == "PROGRESS"
    assert theirs.AsyncResult(progress).info == {"done": 3, "of": 10}
    assert not theirs.AsyncResult(progress).ready()
    assert theirs.AsyncResult(started).state == "STARTED"
    assert theirs.AsyncResult(started).info == {"pid": 123, "hostname": "celeriac@here"}
    assert theirs.AsyncResult(retried).state == "RETRY"
    assert isinstance(theirs.AsyncResult(retried).info, ValueError)
    assert theirs.AsyncResult(new_id()).state == "PENDING"


def test_celery_restores_a_group_saved_by_celeriac(ours: celeriac.Celery, theirs: Any) -> None:
    ids = [new_id() for _ in range(3)]
    for index, task_id in enumerate(ids):
        store(ours, task_id, states.SUCCESS, index * 10)
    saved = celeriac.GroupResult(new_id(), [ours.AsyncResult(i) for i in ids], app=ours).save()
    restored = theirs.GroupResult.restore(saved.id)
    assert restored is not None
    assert [member.id for member in restored.results] == ids
    assert restored.get(timeout=TIMEOUT) == [0, 10, 20]
    restored.delete()  # and Celery's delete is seen by celeriac
    assert celeriac.GroupResult.restore(saved.id, app=ours) is None


def test_celery_forgets_a_result_stored_by_celeriac(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    store(ours, task_id, states.SUCCESS, 1)
    theirs.AsyncResult(task_id).forget()
    assert ours.AsyncResult(task_id).state == "PENDING"


# -- Celery stores, celeriac reads ------------------------------------------------------------


def test_celeriac_reads_a_success_with_every_type(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    theirs.backend.store_result(task_id, VALUE, "SUCCESS")
    result = ours.AsyncResult(task_id)
    assert result.get(timeout=TIMEOUT) == VALUE
    assert result.state == states.SUCCESS
    assert isinstance(result.date_done, dt.datetime)
    assert result.date_done.tzinfo is not None


def test_celeriac_raises_a_failure_stored_by_celery(ours: celeriac.Celery, theirs: Any) -> None:
    import interop_errors

    for exc in (ValueError("bad ✗", 3), interop_errors.InteropError("custom", {"k": [1]})):
        task_id = new_id()
        caught, text = raised(exc)
        theirs.backend.mark_as_failure(task_id, caught, traceback=text)
        result = ours.AsyncResult(task_id)
        with pytest.raises(type(exc)) as error:
            result.get(timeout=TIMEOUT)
        assert error.value.args == exc.args
        assert result.state == states.FAILURE
        assert result.traceback == text


def test_celeriac_sees_a_task_revoked_by_celery(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    theirs.backend.mark_as_revoked(task_id, reason="expired")
    result = ours.AsyncResult(task_id)
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=TIMEOUT)
    assert result.state == states.REVOKED


def test_celeriac_reads_states_that_are_not_ready(ours: celeriac.Celery, theirs: Any) -> None:
    progress, started, retried = new_id(), new_id(), new_id()
    theirs.backend.store_result(progress, {"done": 3, "of": 10}, "PROGRESS")
    theirs.backend.mark_as_started(started, pid=123, hostname="celery@there")
    retry_exc, text = raised(ValueError("again"))
    theirs.backend.mark_as_retry(retried, retry_exc, traceback=text)
    assert ours.AsyncResult(progress).state == "PROGRESS"
    assert ours.AsyncResult(progress).info == {"done": 3, "of": 10}
    assert not ours.AsyncResult(progress).ready()
    assert ours.AsyncResult(started).state == states.STARTED
    assert ours.AsyncResult(started).info == {"pid": 123, "hostname": "celery@there"}
    assert ours.AsyncResult(retried).state == states.RETRY
    assert isinstance(ours.AsyncResult(retried).info, ValueError)


def test_celeriac_restores_a_group_saved_by_celery(ours: celeriac.Celery, theirs: Any) -> None:
    ids = [new_id() for _ in range(3)]
    for index, task_id in enumerate(ids):
        theirs.backend.store_result(task_id, index * 10, "SUCCESS")
    saved = theirs.GroupResult(new_id(), [theirs.AsyncResult(i) for i in ids])
    saved.save()
    restored = celeriac.GroupResult.restore(saved.id, app=ours)
    assert restored is not None
    assert [member.id for member in restored.results] == ids
    assert restored.get(timeout=TIMEOUT) == [0, 10, 20]
    restored.delete()  # and celeriac's delete is seen by Celery
    assert theirs.GroupResult.restore(saved.id) is None


def test_celeriac_forgets_a_result_stored_by_celery(ours: celeriac.Celery, theirs: Any) -> None:
    task_id = new_id()
    theirs.backend.store_result(task_id, 1, "SUCCESS")
    ours.AsyncResult(task_id).forget()
    assert theirs.AsyncResult(task_id).state == "PENDING"


# -- floats that are not JSON ------------------------------------------------------------------


def test_celeriac_reads_nan_and_infinity_stored_by_celery(
    ours: celeriac.Celery, theirs: Any
) -> None:
    # Python's json (kombu's) writes them as the non-standard literals NaN and Infinity.
    task_id = new_id()
    theirs.backend.store_result(task_id, [float("inf"), float("-inf"), float("nan")], "SUCCESS")
    inf, minus_inf, nan = ours.AsyncResult(task_id).get(timeout=TIMEOUT)
    assert (inf, minus_inf) == (float("inf"), float("-inf"))
    assert math.isnan(nan)


@pytest.mark.xfail(
    strict=True,
    reason="orjson writes NaN and Infinity as null; spotting them would take a scan of "
    "every float of every message, which the publish path does not do",
)
def test_celery_reads_nan_and_infinity_stored_by_celeriac(
    ours: celeriac.Celery, theirs: Any
) -> None:
    task_id = new_id()
    store(ours, task_id, states.SUCCESS, [float("inf"), float("nan")])
    inf, nan = theirs.AsyncResult(task_id).get(timeout=TIMEOUT)
    assert inf == float("inf")
    assert math.isnan(nan)


# -- one group, members stored by both ----------------------------------------------------------


def test_a_group_of_members_stored_by_both_is_joined_by_both(
    ours: celeriac.Celery, theirs: Any
) -> None:
    by_us, by_them = new_id(), new_id()
    store(ours, by_us, states.SUCCESS, "ours")
    theirs.backend.store_result(by_them, "theirs", "SUCCESS")
    group_id = new_id()
    celeriac.GroupResult(group_id, [ours.AsyncResult(by_us), ours.AsyncResult(by_them)]).save(
        ours.backend
    )
    assert theirs.GroupResult.restore(group_id).join(timeout=TIMEOUT) == ["ours", "theirs"]
    assert celeriac.GroupResult.restore(group_id, app=ours).join(timeout=TIMEOUT) == [
        "ours",
        "theirs",
    ]
