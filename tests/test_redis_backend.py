"""The Redis result backend against Celery's own Redis backend, as a peer on the same keys.

Database 10 of the local Redis belongs to these tests; every test deletes the keys of the
ids it used.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import redis

from celeriac import states
from celeriac.backends import BackendOptions, create_backend
from celeriac.backends.redis import RedisBackend, key_prefix
from celeriac.exceptions import TaskRevokedError
from celeriac.protocol.results import build_meta, exception_from_dict, exception_to_dict

celery: Any = pytest.importorskip("celery")

pytestmark = [pytest.mark.redis, pytest.mark.celery]

URL = "redis://127.0.0.1:6379/10"


class Ids:
    """Fresh ids; every key mentioning one is deleted after the test."""

    def __init__(self) -> None:
        self.issued: list[str] = []

    def __call__(self) -> str:
        new = str(uuid.uuid4())
        self.issued.append(new)
        return new


@pytest.fixture
def ids() -> Iterator[Ids]:
    made = Ids()
    yield made
    client = redis.Redis.from_url(URL)
    for issued in made.issued:
        keys = list(client.scan_iter(match=f"*{issued}*", count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(URL)
    yield client
    client.close()


@pytest.fixture
def backend() -> Iterator[RedisBackend]:
    made = RedisBackend(URL)
    yield made
    made.close()


def celery_app(**conf: Any) -> Any:
    app = celery.Celery("wire", broker="memory://", backend=URL, set_as_current=False)
    app.conf.update(conf)
    return app


def close_celery(app: Any) -> None:
    # Celery's Redis backend keeps its connections past app.close().
    app.backend.result_consumer.stop()
    app.backend.client.connection_pool.disconnect()
    app.close()


@pytest.fixture
def app() -> Iterator[Any]:
    made = celery_app()
    yield made
    close_celery(made)


# -- celeriac writes, Celery reads ---------------------------------------------------------


def test_celery_reads_a_success(backend: RedisBackend, app: Any, ids: Ids) -> None:
    task_id = ids()
    backend.store([build_meta(task_id, states.SUCCESS, {"total": [1, 2.5, None]})])

    result = app.AsyncResult(task_id)

    assert result.get(timeout=5) == {"total": [1, 2.5, None]}
    assert result.state == "SUCCESS"
    assert result.date_done is not None


def test_celery_reads_failures_with_type_message_and_traceback(
    backend: RedisBackend, app: Any, ids: Ids
) -> None:
    failed, revoked = ids(), ids()
    backend.store(
        [
            build_meta(
                failed,
                states.FAILURE,
                exception_to_dict(ValueError("bad", 42)),
                "Traceback (most recent call last):\n  ...\nValueError: ('bad', 42)\n",
            ),
            build_meta(revoked, states.REVOKED, exception_to_dict(TaskRevokedError("gone"))),
        ]
    )

    result = app.AsyncResult(failed)
    exc = result.get(propagate=False, timeout=5)
    assert type(exc) is ValueError and exc.args == ("bad", 42)
    assert result.traceback.endswith("ValueError: ('bad', 42)\n")
    assert result.state == "FAILURE"
    with pytest.raises(ValueError, match="bad"):
        result.get(timeout=5)

    revoked_exc = app.AsyncResult(revoked).get(propagate=False, timeout=5)
    assert type(revoked_exc) is celery.exceptions.TaskRevokedError


def test_celery_waiter_is_woken_by_a_celeriac_store(
    backend: RedisBackend, app: Any, ids: Ids
) -> None:
    task_id = ids()
    got: list[Any] = []

    def wait() -> None:
        got.append(app.AsyncResult(task_id).get(timeout=10))
        close_celery(app)  # Celery's backend is per thread: close this thread's

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # Celery subscribes first; the value must come by PUBLISH

    backend.store([build_meta(task_id, states.SUCCESS, "pushed")])
    waiter.join(10)

    assert got == ["pushed"]


def test_stored_value_is_what_celery_writes(
    backend: RedisBackend, app: Any, raw: redis.Redis, ids: Ids
) -> None:
    ours, theirs, lasting = ids(), ids(), ids()
    backend.store([build_meta(ours, states.SUCCESS, 5)])
    app.backend.store_result(theirs, 5, states.SUCCESS)

    ours_meta = orjson.loads(raw.get(f"celery-task-meta-{ours}") or b"null")
    theirs_meta = orjson.loads(raw.get(f"celery-task-meta-{theirs}") or b"null")

    assert set(ours_meta) == set(theirs_meta)
    assert ours_meta["result"] == theirs_meta["result"] == 5
    assert 86390 < raw.ttl(f"celery-task-meta-{ours}") <= 86400
    forever = RedisBackend(URL, BackendOptions(expires=None))
    forever.store([build_meta(lasting, states.RETRY, None)])
    assert raw.ttl(f"celery-task-meta-{lasting}") == -1
    forever.close()


def test_global_keyprefix_follows_celery(ids: Ids, raw: redis.Redis) -> None:
    task_id = ids()
    options = {"global_keyprefix": "wire-app"}
    backend = RedisBackend(URL, BackendOptions(transport_options=options))
    app = celery_app(result_backend_transport_options=options)
    try:
        backend.store([build_meta(task_id, states.SUCCESS, "prefixed")])
        assert raw.exists(f"wire-app_celery-task-meta-{task_id}")
        assert app.AsyncResult(task_id).get(timeout=5) == "prefixed"
    finally:
        backend.close()
        close_celery(app)
    assert key_prefix({"global_keyprefix": "x:"}) == "x:"
    assert key_prefix({}) == ""


# -- Celery writes, celeriac reads ---------------------------------------------------------


def test_celeriac_reads_celery_results(backend: RedisBackend, app: Any, ids: Ids) -> None:
    done, failed = ids(), ids()
    app.backend.store_result(done, {"x": [1, 2]}, states.SUCCESS)
    app.backend.mark_as_failure(failed, KeyError("missing"), traceback="Traceback: tb")

    ok, bad = backend.get([done, failed])

    assert ok is not None and bad is not None
    assert (ok["status"], ok["result"], ok["task_id"]) == ("SUCCESS", {"x": [1, 2]}, done)
    assert bad["status"] == "FAILURE" and bad["traceback"] == "Traceback: tb"
    exc = exception_from_dict(bad["result"])
    assert type(exc) is KeyError and exc.args == ("missing",)
    assert backend.wait([done, failed], timeout=1, interval=0.1)[0]["result"] == {"x": [1, 2]}


def test_a_success_stays_whoever_writes_it(backend: RedisBackend, app: Any, ids: Ids) -> None:
    ours, theirs = ids(), ids()
    backend.store([build_meta(ours, states.SUCCESS, "ours")])
    app.backend.mark_as_failure(ours, ValueError("late"))
    app.backend.store_result(theirs, "theirs", states.SUCCESS)
    backend.store([build_meta(theirs, states.FAILURE, exception_to_dict(ValueError("late")))])

    assert [meta and meta["result"] for meta in backend.get([ours, theirs])] == ["ours", "theirs"]


def test_groups_cross_both_ways(backend: RedisBackend, app: Any, ids: Ids) -> None:
    theirs, ours, first, second = ids(), ids(), ids(), ids()
    # What GroupResult(theirs, [first, second]).as_tuple() is; Celery's own save path. (No
    # AsyncResult objects: collected late, they reopen Celery's Pub/Sub connection.)
    as_tuple = ((theirs, None), [((first, None), None), ((second, None), None)])
    app.backend.save_group(theirs, SimpleNamespace(as_tuple=lambda: as_tuple))

    assert backend.get_group(theirs) == [
        [theirs, None],
        [[[first, None], None], [[second, None], None]],
    ]

    backend.save_group(ours, [[ours, None], [[[first, None], None], [[second, None], None]]])
    stored = app.backend.decode(app.backend.get(app.backend.get_key_for_group(ours)))
    assert stored == {"result": [[ours, None], [[[first, None], None], [[second, None], None]]]}


# -- chords: the keys of Celery 5.7 ----------------------------------------------------------


def part(task_id: str, value: Any) -> dict[str, Any]:
    return build_meta(task_id, states.SUCCESS, value)


def test_chord_keys_are_celerys(
    backend: RedisBackend, app: Any, raw: redis.Redis, ids: Ids
) -> None:
    group_id, first, second = ids(), ids(), ids()
    app.backend.set_chord_size(group_id, 2)  # what a Celery client does before the header
    key = f"celery-taskset-meta-{group_id}"

    assert backend.chord_part_return(group_id, 0, 1, part(second, 20)) is None

    assert raw.zrange(f"{key}.j", 0, -1, withscores=True) == [
        (orjson.dumps([1, second, "SUCCESS", 20]), 1.0)
    ]
    assert raw.smembers(f"{key}.d") == {f"{second}:1".encode()}
    joined = backend.chord_part_return(group_id, 0, 0, part(first, 10))
    assert joined == [
        {"task_id": first, "status": "SUCCESS", "result": 10},
        {"task_id": second, "status": "SUCCESS", "result": 20},
    ]
    assert raw.get(f"{key}.c") == b"done" and 0 < raw.ttl(f"{key}.c") <= 300
    assert not raw.exists(f"{key}.j", f"{key}.s", f"{key}.d")


def celery_header_request(task_id: str, group_id: str, index: int) -> SimpleNamespace:
    body = celery.signature("proj.body", app=celery.Celery(set_as_current=False))
    return SimpleNamespace(id=task_id, group=group_id, group_index=index, chord=body)


def test_a_celery_worker_completes_a_chord_celeriac_started(
    backend: RedisBackend, app: Any, raw: redis.Redis, ids: Ids
) -> None:
    group_id, first, second = ids(), ids(), ids()
    # A celeriac client sends no size ahead: the first celeriac part records it for Celery.
    assert backend.chord_part_return(group_id, 2, 0, part(first, 10)) is None
    assert raw.get(f"celery-taskset-meta-{group_id}.s") == b"2"

    app.backend.on_chord_part_return(celery_header_request(second, group_id, 1), "SUCCESS", 20)

    assert raw.get(f"celery-taskset-meta-{group_id}.c") == b"done"  # Celery released the body
    assert backend.chord_part_return(group_id, 2, 0, part(first, 10)) is None  # late duplicate


def test_celeriac_completes_a_chord_a_celery_worker_started(
    backend: RedisBackend, app: Any, ids: Ids
) -> None:
    group_id, first, second = ids(), ids(), ids()
    app.backend.set_chord_size(group_id, 2)
    app.backend.on_chord_part_return(celery_header_request(first, group_id, 0), "SUCCESS", 10)

    joined = backend.chord_part_return(group_id, 2, 1, part(second, 20))

    assert joined is not None
    assert [(meta["task_id"], meta["result"]) for meta in joined] == [(first, 10), (second, 20)]


# -- configuration ---------------------------------------------------------------------------


def test_registry_creates_the_redis_backend() -> None:
    backend = create_backend(URL)
    assert isinstance(backend, RedisBackend)
    assert backend.capabilities.cross_process
    backend.close()
