"""The result-backend contract (celeriac/backends/base.py), checked on every implementation.

Each test runs once per ``backend_*.py`` module beside this file; adding a backend means
adding such a module, nothing else. A module provides:

``NAME: str``
    The parameter id (``pytest -k sqlite``).
``make_backend(tmp_path, request, options: BackendOptions) -> ResultBackend``
    A new instance on this test's store. Called several times per test, every call on
    the same store. Child processes (for ``cross_process`` backends) open their own with
    ``create_backend(backend.url, options)``.
``MARKS: Sequence[pytest.MarkDecorator]`` (optional)
    Marks for this parameter, e.g. ``(pytest.mark.redis,)``.
``cleanup(tmp_path, request) -> None`` (optional)
    Called once after the test, when every instance is closed.

Tests state what they need with ``@pytest.mark.requires_capability("chords", ...)``
(attribute names of :class:`celeriac.backends.base.BackendCapabilities`); backends without
it are skipped for that test.

Backend-specific checks (URLs, the disabled backend, SQLite housekeeping) are at the end.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import celeriac.backends
from celeriac import states
from celeriac.backends import BackendOptions, ResultBackend, create_backend
from celeriac.backends.disabled import NO_BACKEND_MESSAGE, DisabledBackend
from celeriac.backends.memory import MemoryBackend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.exceptions import (
    ContentDisallowed,
    ImproperlyConfigured,
    TaskRevokedError,
    TimeoutError,
)
from celeriac.protocol.results import build_meta, exception_from_dict, exception_to_dict

_HERE = Path(__file__).parent


def _load_backend_modules() -> list[ModuleType]:
    # Loaded by path, so the suite works whether or not ``tests`` is a package.
    modules = []
    for path in sorted(_HERE.glob("backend_*.py")):
        spec = importlib.util.spec_from_file_location(f"_conformance_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


BACKEND_MODULES = _load_backend_modules()


class BackendFactory:
    """Creates backends on one store and closes them all after the test."""

    def __init__(self, module: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.module = module
        self.name: str = module.NAME
        self._tmp_path = tmp_path
        self._request = request
        self.created: list[ResultBackend] = []

    def __call__(self, options: BackendOptions | None = None) -> ResultBackend:
        backend: ResultBackend = self.module.make_backend(
            self._tmp_path, self._request, options or BackendOptions()
        )
        self.created.append(backend)
        return backend

    def close_all(self) -> None:
        for backend in self.created:
            backend.close()


@pytest.fixture(
    params=[
        pytest.param(module, id=module.NAME, marks=list(getattr(module, "MARKS", ())))
        for module in BACKEND_MODULES
    ]
)
def backend_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendFactory]:
    module: Any = request.param
    factory = BackendFactory(module, tmp_path, request)
    try:
        required = [
            name
            for marker in request.node.iter_markers("requires_capability")
            for name in marker.args
        ]
        if required:
            capabilities = factory().capabilities
            missing = [name for name in required if not getattr(capabilities, name)]
            if missing:
                pytest.skip(f"{factory.name} lacks {', '.join(missing)}")
        yield factory
    finally:
        try:
            factory.close_all()
        finally:
            cleanup = getattr(module, "cleanup", None)
            if cleanup is not None:
                cleanup(tmp_path, request)


@pytest.fixture
def backend(backend_factory: BackendFactory) -> ResultBackend:
    return backend_factory()


def new_id() -> str:
    return str(uuid.uuid4())


def success(task_id: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    return build_meta(task_id, states.SUCCESS, value, extra=extra)


def failure(task_id: str, exc: BaseException, traceback: str = "Traceback...") -> dict[str, Any]:
    return build_meta(task_id, states.FAILURE, exception_to_dict(exc), traceback)


def store_later(backend: ResultBackend, metas: Sequence[dict[str, Any]]) -> threading.Thread:
    """Store ``metas`` from another thread, which starts now."""
    thread = threading.Thread(target=backend.store, args=(list(metas),), daemon=True)
    thread.start()
    return thread


# -- storing and reading ------------------------------------------------------------------


def test_unknown_ids_read_as_none(backend: ResultBackend) -> None:
    assert backend.get([new_id(), new_id()]) == [None, None]
    assert backend.get([]) == []


EVERY_JSON_TYPE = {
    "text": "héllo wörld ✓",
    "empty": "",
    "int": 42,
    "negative": -7,
    "big": 2**62,
    "float": 2.5,
    "true": True,
    "false": False,
    "null": None,
    "list": [1, "two", None, [3.0]],
    "nested": {"a": {"b": {"c": []}}, "d": {}},
}


def test_roundtrip_keeps_every_json_type(backend: ResultBackend) -> None:
    task_id = new_id()
    meta = success(task_id, EVERY_JSON_TYPE)
    backend.store([meta])
    (stored,) = backend.get([task_id])
    assert stored == meta
    assert stored is not None and stored["result"] == EVERY_JSON_TYPE


def test_roundtrip_keeps_tagged_types_of_the_json_dialect(backend: ResultBackend) -> None:
    task_id = new_id()
    moment = dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
    backend.store([success(task_id, {"when": moment, "raw": b"\x00\xff"})])
    (stored,) = backend.get([task_id])
    assert stored is not None
    assert stored["result"] == {"when": moment, "raw": b"\x00\xff"}


def test_extended_fields_roundtrip(backend: ResultBackend) -> None:
    task_id = new_id()
    extra = {
        "name": "proj.add",
        "args": [1, 2],
        "kwargs": {"z": 3},
        "worker": "celeriac@host",
        "retries": 2,
        "queue": "default",
        "group_id": "g-1",
        "parent_id": "p-1",
    }
    backend.store([success(task_id, 3, **extra)])
    (stored,) = backend.get([task_id])
    assert stored is not None
    assert {key: stored[key] for key in extra} == extra


def test_get_answers_in_the_order_asked(backend: ResultBackend) -> None:
    first, second, unknown = new_id(), new_id(), new_id()
    backend.store([success(first, 1), success(second, 2)])
    got = backend.get([second, unknown, first, second])
    assert [meta and meta["result"] for meta in got] == [2, None, 1, 2]


def test_success_is_never_overwritten(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store([success(task_id, "first")])
    backend.store([build_meta(task_id, states.STARTED, {"pid": 1})])
    backend.store([failure(task_id, ValueError("late duplicate"))])
    backend.store([success(task_id, "second")])
    (stored,) = backend.get([task_id])
    assert stored is not None
    assert (stored["status"], stored["result"]) == (states.SUCCESS, "first")


def test_unfinished_states_are_replaced(backend: ResultBackend) -> None:
    task_id = new_id()
    for status in (states.RECEIVED, states.STARTED, states.RETRY, "PROGRESS", states.FAILURE):
        backend.store([build_meta(task_id, status, {"step": status})])
        (stored,) = backend.get([task_id])
        assert stored is not None and stored["status"] == status
    # A retried task that failed once may still succeed.
    backend.store([success(task_id, "done")])
    (stored,) = backend.get([task_id])
    assert stored is not None and stored["result"] == "done"


def test_batch_store_writes_every_meta(backend: ResultBackend) -> None:
    task_ids = [new_id() for _ in range(200)]
    backend.store([success(task_id, index) for index, task_id in enumerate(task_ids)])
    got = backend.get(task_ids)
    assert [meta and meta["result"] for meta in got] == list(range(200))


def test_batch_store_applies_metas_in_order(backend: ResultBackend) -> None:
    started_then_done, done_then_failed = new_id(), new_id()
    backend.store(
        [
            build_meta(started_then_done, states.STARTED, None),
            success(done_then_failed, "kept"),
            success(started_then_done, "finished"),
            failure(done_then_failed, ValueError("duplicate")),
        ]
    )
    got = backend.get([started_then_done, done_then_failed])
    assert [(meta and meta["status"], meta and meta["result"]) for meta in got] == [
        (states.SUCCESS, "finished"),
        (states.SUCCESS, "kept"),
    ]


def test_forget_deletes_results(backend: ResultBackend) -> None:
    kept, forgotten = new_id(), new_id()
    backend.store([success(kept, 1), success(forgotten, 2)])
    backend.forget([forgotten, new_id()])  # unknown ids are fine
    assert [meta and meta["result"] for meta in backend.get([kept, forgotten])] == [1, None]
    # A forgotten result can be stored again.
    backend.store([success(forgotten, 3)])
    (stored,) = backend.get([forgotten])
    assert stored is not None and stored["result"] == 3


def test_instances_on_the_same_store_share_results(backend_factory: BackendFactory) -> None:
    writer, reader = backend_factory(), backend_factory()
    task_id = new_id()
    writer.store([success(task_id, "shared")])
    (stored,) = reader.get([task_id])
    assert stored is not None and stored["result"] == "shared"


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml", "pickle"])
def test_every_serializer_roundtrips(backend_factory: BackendFactory, serializer: str) -> None:
    backend = backend_factory(BackendOptions(serializer=serializer))
    task_id = new_id()
    meta = success(task_id, {"numbers": [1, 2.5], "text": "ok", "none": None})
    backend.store([meta])
    assert backend.get([task_id]) == [meta]


def test_content_outside_accept_content_is_refused(backend_factory: BackendFactory) -> None:
    writer = backend_factory(BackendOptions(serializer="pickle"))
    reader = backend_factory(
        BackendOptions(serializer="pickle", accept=frozenset({"application/json"}))
    )
    task_id = new_id()
    writer.store([success(task_id, 1)])
    with pytest.raises(ContentDisallowed):
        reader.get([task_id])


# -- exceptions ---------------------------------------------------------------------------


class CustomError(Exception):
    """An exception class of this test module, importable by its module name."""


def test_exceptions_roundtrip(backend: ResultBackend) -> None:
    builtin, own, custom = new_id(), new_id(), new_id()
    backend.store(
        [
            failure(builtin, ValueError("bad", 42), "Traceback (most recent call last): ..."),
            build_meta(own, states.REVOKED, exception_to_dict(TaskRevokedError("revoked"))),
            failure(custom, CustomError("mine")),
        ]
    )
    got = backend.get([builtin, own, custom])
    assert all(meta is not None for meta in got)
    metas = [meta for meta in got if meta is not None]
    assert metas[0]["result"] == {
        "exc_type": "ValueError",
        "exc_message": ["bad", 42],
        "exc_module": "builtins",
    }
    assert metas[0]["traceback"] == "Traceback (most recent call last): ..."
    # Stored under Celery's module name, so Celery peers re-create their own class.
    assert metas[1]["result"]["exc_module"] == "celery.exceptions"
    raised = [exception_from_dict(meta["result"]) for meta in metas]
    assert type(raised[0]) is ValueError and raised[0].args == ("bad", 42)
    assert type(raised[1]) is TaskRevokedError
    assert type(raised[2]) is CustomError and raised[2].args == ("mine",)


def test_exception_of_a_module_that_is_not_importable_keeps_its_name(
    backend: ResultBackend,
) -> None:
    task_id = new_id()
    stored_exc = {"exc_type": "PaymentDeclined", "exc_message": ["card"], "exc_module": "shop.x"}
    backend.store([build_meta(task_id, states.FAILURE, stored_exc, "tb")])
    (meta,) = backend.get([task_id])
    assert meta is not None
    exc = exception_from_dict(meta["result"])
    assert type(exc).__name__ == "PaymentDeclined" and exc.args == ("card",)
    assert isinstance(exc, Exception)


# -- waiting ------------------------------------------------------------------------------


def test_wait_returns_ready_results_at_once(backend: ResultBackend) -> None:
    first, second = new_id(), new_id()
    backend.store([success(first, 1), failure(second, KeyError("k"))])
    started = time.monotonic()
    metas = backend.wait([second, first], timeout=5, interval=0.5)
    assert [meta["task_id"] for meta in metas] == [second, first]
    assert [meta["status"] for meta in metas] == [states.FAILURE, states.SUCCESS]
    assert time.monotonic() - started < 1


def test_wait_returns_when_another_thread_stores(backend_factory: BackendFactory) -> None:
    waiter, writer = backend_factory(), backend_factory()
    task_ids = [new_id(), new_id()]
    writer.store([success(task_ids[0], "early")])
    thread = store_later(writer, [success(task_ids[1], "late")])
    metas = waiter.wait(task_ids, timeout=10, interval=0.05)
    thread.join()
    assert [meta["result"] for meta in metas] == ["early", "late"]


def test_wait_ignores_unfinished_states(backend: ResultBackend) -> None:
    task_id = new_id()
    backend.store([build_meta(task_id, states.STARTED, {"pid": 1})])
    with pytest.raises(TimeoutError):
        backend.wait([task_id], timeout=0.2, interval=0.05)
    thread = store_later(backend, [build_meta(task_id, states.REVOKED, None)])
    (meta,) = backend.wait([task_id], timeout=10, interval=0.05)
    thread.join()
    assert meta["status"] == states.REVOKED


def test_wait_times_out_in_bounded_time(backend: ResultBackend) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        backend.wait([new_id()], timeout=0.3, interval=0.1)
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5


def test_wait_with_a_zero_timeout_checks_once(backend: ResultBackend) -> None:
    task_id = new_id()
    with pytest.raises(TimeoutError):
        backend.wait([task_id], timeout=0, interval=0.1)
    backend.store([success(task_id, 1)])
    assert backend.wait([task_id], timeout=0, interval=0.1)[0]["result"] == 1


# -- expiry -------------------------------------------------------------------------------


def poll_until(check: Callable[[], bool], within: float) -> bool:
    """Call ``check`` until it is true or ``within`` seconds passed (expiry is clock-based)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_results_expire(backend_factory: BackendFactory) -> None:
    short = backend_factory(BackendOptions(expires=0.2))
    if short.capabilities.needs_reply_to:
        pytest.skip("replies expire on the broker; a read one stays with its reader")
    task_id, group_id = new_id(), new_id()
    short.store([success(task_id, 1)])
    short.save_group(group_id, [[group_id, None], [[[task_id, None], None]]])
    assert short.get([task_id])[0] is not None
    assert poll_until(lambda: short.get([task_id]) == [None], within=5)
    assert poll_until(lambda: short.get_group(group_id) is None, within=5)
    # An expired SUCCESS no longer blocks a new result under the same id.
    lasting = backend_factory(BackendOptions(expires=None))
    lasting.store([failure(task_id, ValueError("rerun"))])
    (meta,) = lasting.get([task_id])
    assert meta is not None and meta["status"] == states.FAILURE


# -- groups -------------------------------------------------------------------------------


def test_groups_save_read_and_forget(backend: ResultBackend) -> None:
    if backend.capabilities.needs_reply_to:
        pytest.skip("replies are not stored, so groups cannot be saved (as in Celery)")
    group_id = new_id()
    members = [new_id(), new_id()]
    value = [[group_id, None], [[[member, None], None] for member in members]]
    assert backend.get_group(group_id) is None
    backend.save_group(group_id, value)
    assert backend.get_group(group_id) == value
    backend.forget_group(group_id)
    assert backend.get_group(group_id) is None


# -- chords -------------------------------------------------------------------------------


def member_meta(group_id: str, index: int) -> dict[str, Any]:
    return success(f"{group_id}-{index}", index * 10, group_id=group_id, group_index=index)


@pytest.mark.requires_capability("chords")
def test_chord_completes_once_with_metas_in_order(backend: ResultBackend) -> None:
    group_id = new_id()
    calls = [
        backend.chord_part_return(group_id, 3, index, member_meta(group_id, index))
        for index in (2, 0)
    ]
    assert calls == [None, None]
    joined = backend.chord_part_return(group_id, 3, 1, member_meta(group_id, 1))
    assert joined is not None
    assert [meta["result"] for meta in joined] == [0, 10, 20]
    assert [meta["task_id"] for meta in joined] == [f"{group_id}-{i}" for i in range(3)]
    # Late duplicates after completion do not complete it again.
    assert backend.chord_part_return(group_id, 3, 1, member_meta(group_id, 1)) is None


@pytest.mark.requires_capability("chords")
def test_chord_duplicates_count_once(backend: ResultBackend) -> None:
    group_id = new_id()
    for _ in range(3):
        assert backend.chord_part_return(group_id, 2, 0, member_meta(group_id, 0)) is None
    joined = backend.chord_part_return(group_id, 2, 1, member_meta(group_id, 1))
    assert joined is not None and len(joined) == 2


@pytest.mark.requires_capability("chords")
def test_chord_keeps_failures_in_their_place(backend: ResultBackend) -> None:
    group_id = new_id()
    backend.chord_part_return(group_id, 2, 1, failure(f"{group_id}-1", ValueError("x")))
    joined = backend.chord_part_return(group_id, 2, 0, member_meta(group_id, 0))
    assert joined is not None
    assert [meta["status"] for meta in joined] == [states.SUCCESS, states.FAILURE]


@pytest.mark.requires_capability("chords")
def test_chords_are_independent(backend: ResultBackend) -> None:
    first, second = new_id(), new_id()
    assert backend.chord_part_return(first, 2, 0, member_meta(first, 0)) is None
    assert backend.chord_part_return(second, 1, 0, member_meta(second, 0)) is not None
    assert backend.chord_part_return(first, 2, 1, member_meta(first, 1)) is not None


@pytest.mark.requires_capability("chords")
def test_chord_completes_exactly_once_among_threads(backend_factory: BackendFactory) -> None:
    group_id, size, callers = new_id(), 12, 6
    backends = [backend_factory() for _ in range(callers)]
    completions: list[list[dict[str, Any]]] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def report_every_member(backend: ResultBackend, seed: int) -> None:
        order = list(range(size))
        random.Random(seed).shuffle(order)  # every caller reports every member: duplicates
        start.wait()
        for index in order:
            joined = backend.chord_part_return(group_id, size, index, member_meta(group_id, index))
            if joined is not None:
                with lock:
                    completions.append(joined)

    threads = [
        threading.Thread(target=report_every_member, args=(backend, seed))
        for seed, backend in enumerate(backends)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(completions) == 1
    assert [meta["result"] for meta in completions[0]] == [index * 10 for index in range(size)]


# -- across processes ---------------------------------------------------------------------

_CHILD = """
import json, sys
from celeriac.backends import BackendOptions, create_backend

job = json.loads(sys.argv[1])
backend = create_backend(job["url"], BackendOptions(**job["options"]))
print("ready", flush=True)
sys.stdin.readline()  # the parent says go once every child is ready
completions = []
if job["action"] == "store":
    backend.store(job["metas"])
else:
    for index in job["indices"]:
        joined = backend.chord_part_return(job["group_id"], job["size"], index, job["metas"][index])
        if joined is not None:
            completions.append([meta["task_id"] for meta in joined])
backend.close()
print(json.dumps(completions), flush=True)
"""


class ChildProcess:
    """A fresh interpreter that opens the backend by URL and acts when told to go."""

    def __init__(self, backend: ResultBackend, options: BackendOptions, **job: Any) -> None:
        payload = {
            "url": backend.url,
            "options": {
                "serializer": options.serializer,
                "expires": options.expires,
                "transport_options": dict(options.transport_options),
            },
            **job,
        }
        package_root = Path(celeriac.backends.__file__).parents[2]
        env = {**os.environ, "PYTHONPATH": str(package_root)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(payload)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout

    def wait_ready(self) -> None:
        assert self.stdout.readline().strip() == "ready"

    def go(self) -> None:
        self.stdin.write("go\n")
        self.stdin.flush()

    def finish(self) -> list[list[str]]:
        """What the child reported, once it exited."""
        output, _ = self.process.communicate(timeout=60)
        assert self.process.returncode == 0
        completions: list[list[str]] = json.loads(output)
        return completions

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture
def spawn_child(backend: ResultBackend) -> Iterator[Callable[..., ChildProcess]]:
    """Starts child processes on ``backend``'s store; kills any left when the test ends."""
    if not backend.capabilities.cross_process:
        pytest.skip("results of this backend stay in one process")
    if backend.capabilities.needs_reply_to:
        pytest.skip("a child opened by URL alone is not the client that replies go to")
    children: list[ChildProcess] = []

    def spawn(**job: Any) -> ChildProcess:
        child = ChildProcess(backend, BackendOptions(), **job)
        children.append(child)
        return child

    yield spawn
    for child in children:
        child.kill()


def test_wait_returns_when_another_process_stores(
    backend: ResultBackend, spawn_child: Callable[..., ChildProcess]
) -> None:
    task_id = new_id()
    child = spawn_child(action="store", metas=[success(task_id, "from a child")])
    child.wait_ready()
    child.go()
    (meta,) = backend.wait([task_id], timeout=30, interval=0.05)
    assert child.finish() == []
    assert meta["result"] == "from a child"


@pytest.mark.requires_capability("chords")
def test_chord_completes_exactly_once_among_processes(
    spawn_child: Callable[..., ChildProcess],
) -> None:
    group_id, size = new_id(), 8
    metas = [member_meta(group_id, index) for index in range(size)]
    children = []
    for seed in range(3):
        order = list(range(size))
        random.Random(seed).shuffle(order)
        children.append(
            spawn_child(action="chord", group_id=group_id, size=size, indices=order, metas=metas)
        )
    for child in children:
        child.wait_ready()
    for child in children:
        child.go()
    completions = [completion for child in children for completion in child.finish()]
    assert completions == [[f"{group_id}-{index}" for index in range(size)]]


# -- specific backends --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "backend_class"),
    [
        ("memory://", MemoryBackend),
        ("cache+memory://", MemoryBackend),
        ("db+sqlite:///results.db", SQLiteBackend),
        ("sqlite:///results.db", SQLiteBackend),
        ("disabled://", DisabledBackend),
        (None, DisabledBackend),
    ],
)
def test_registry_maps_schemes(
    url: str | None, backend_class: type, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = create_backend(url)
    try:
        assert type(backend) is backend_class
    finally:
        backend.close()


def test_memory_stores_are_named_by_url() -> None:
    name = new_id()
    one, same = MemoryBackend(f"memory://{name}"), MemoryBackend(f"cache+memory://{name}")
    other = MemoryBackend(f"memory://{new_id()}")
    task_id = new_id()
    one.store([success(task_id, 1)])
    assert same.get([task_id])[0] is not None
    assert other.get([task_id]) == [None]


def test_sqlite_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="cannot open"):
        SQLiteBackend(f"db+sqlite:///{tmp_path / 'missing' / 'r.db'}")


def test_sqlite_cleanup_deletes_expired_rows(tmp_path: Path) -> None:
    url = f"db+sqlite:///{tmp_path / 'r.db'}"
    short = SQLiteBackend(url, BackendOptions(expires=0.05))
    lasting = SQLiteBackend(url, BackendOptions(expires=None))
    try:
        expired_id, kept_id, group_id = new_id(), new_id(), new_id()
        short.save_group(group_id, [])
        short.chord_part_return(group_id, 2, 0, member_meta(group_id, 0))
        short.store([success(expired_id, 1)])  # written last: expires last
        lasting.store([success(kept_id, 2)])
        assert poll_until(lambda: short.get([expired_id]) == [None], within=5)
        short.cleanup()
        with sqlite3.connect(tmp_path / "r.db") as connection:
            rows = {
                table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("celeriac_taskmeta", "celeriac_groupmeta", "celeriac_chord_parts")
            }
        connection.close()
        assert rows == {"celeriac_taskmeta": 1, "celeriac_groupmeta": 0, "celeriac_chord_parts": 0}
    finally:
        short.close()
        lasting.close()


def test_sqlite_backend_keeps_working_across_fork(tmp_path: Path) -> None:
    backend = SQLiteBackend(f"db+sqlite:///{tmp_path / 'r.db'}")
    before, in_child, after = new_id(), new_id(), new_id()
    backend.store([success(before, "parent")])  # the parent has a connection open
    pid = os.fork()
    if pid == 0:  # the child: store through the inherited instance, then close it
        code = 1
        try:
            backend.store([success(in_child, "child")])
            backend.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    backend.store([success(after, "parent again")])
    got = backend.get([before, in_child, after])
    assert [meta and meta["result"] for meta in got] == ["parent", "child", "parent again"]
    backend.close()


def test_disabled_backend_explains_how_to_configure_one() -> None:
    backend = DisabledBackend()
    assert backend.capabilities.enabled is False
    backend.store([success(new_id(), 1)])  # sending tasks works: results are dropped
    backend.forget([new_id()])
    for read in (
        lambda: backend.get([new_id()]),
        lambda: backend.wait([new_id()], 1, 0.1),
        lambda: backend.get_group(new_id()),
        lambda: backend.save_group(new_id(), []),
        lambda: backend.chord_part_return(new_id(), 1, 0, success(new_id())),
    ):
        with pytest.raises(NotImplementedError) as raised:
            read()
        assert isinstance(raised.value, ImproperlyConfigured)
        assert str(raised.value) == NO_BACKEND_MESSAGE
        assert "result_backend" in NO_BACKEND_MESSAGE
