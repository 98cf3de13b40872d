"""rpc:// results: replies on the queue of the client that sent the task.

* The backend over a real SQLite broker: the reply message a worker sends (Celery's shape),
  who can read it (only the addressed client, once off the broker), which state wins.
* End to end with a celeriac worker subprocess, on SQLite, Redis (database 12) and RabbitMQ
  (a virtual host of this module's own): results, failures, STARTED and custom progress
  states, retries, many results at once, and another client that sees none of them.
* Wire compatibility with Celery 5.7's rpc backend as a peer, on Redis and RabbitMQ: a
  Celery worker's replies read by celeriac, celeriac's replies read by a Celery client,
  and the reply queue declared with the arguments Celery declares it with.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac import Celery, states
from celeriac.backends import BackendOptions, create_backend
from celeriac.backends.rpc import RPCBackend
from celeriac.exceptions import ImproperlyConfigured, TimeoutError
from celeriac.protocol import serializers
from celeriac.protocol.results import build_meta, exception_to_dict
from celeriac.result import ResultSet
from celeriac.transports.base import Transport
from celeriac.transports.sqlite import SQLiteTransport
from tests.support import WorkerProcess

REDIS_URL = "redis://127.0.0.1:6379/12"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672"


def new_id() -> str:
    return str(uuid.uuid4())


def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for a state another process reaches; fail with the time it took."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within} s")
        time.sleep(0.02)


# -- the backend over an SQLite broker ----------------------------------------------------


class Broker:
    """An SQLite broker in tmp_path, and rpc:// backends (clients) on it."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'broker.db'}"
        self.opened: list[Transport | RPCBackend] = []

    def transport(self) -> Transport:
        transport = SQLiteTransport(self.url)
        self.opened.append(transport)
        return transport

    def client(self, oid: str | None = None, **options: Any) -> RPCBackend:
        backend = RPCBackend(
            "rpc://", BackendOptions(**options), transport_factory=self.transport, oid=oid
        )
        self.opened.append(backend)
        return backend

    def close(self) -> None:
        for opened in reversed(self.opened):
            opened.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    yield broker
    broker.close()


def reply(task_id: str, status: str, result: Any, reply_to: str, **extra: Any) -> dict[str, Any]:
    """A meta as the worker hands it to ``store``: with the request's reply_to."""
    return build_meta(task_id, status, result, extra={"reply_to": reply_to, **extra})


def test_reply_is_a_celery_rpc_message_on_the_reply_queue(broker: Broker) -> None:
    worker, task_id, reply_to = broker.client(), new_id(), new_id()
    meta = reply(task_id, states.SUCCESS, {"sum": 5}, reply_to, parent_id="p-1")
    worker.store([meta])
    consumer = broker.transport()
    (delivery,) = consumer.fetch([reply_to], 10, timeout=5)
    envelope = delivery.envelope
    assert (envelope.exchange, envelope.routing_key) == ("", reply_to)
    assert envelope.properties["correlation_id"] == task_id
    assert envelope.properties["delivery_mode"] == 1  # transient, as Celery's replies
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    body = serializers.loads(envelope.body, envelope.content_type)
    # The meta as every backend stores it, without the routing detail.
    assert body == {key: value for key, value in meta.items() if key != "reply_to"}
    assert set(body) >= {"task_id", "status", "result", "traceback", "children", "date_done"}
    consumer.ack([delivery])


def test_a_meta_without_reply_to_has_nobody_to_go_to(broker: Broker) -> None:
    backend = broker.client()
    task_id = new_id()
    backend.store([build_meta(task_id, states.SUCCESS, 1)])
    assert backend.get([task_id]) == [None]
    assert broker.transport().size(backend.oid) == 0


def test_only_the_addressed_client_reads_a_result_and_takes_it_off_the_broker(
    broker: Broker,
) -> None:
    worker, sender, other = broker.client(), broker.client(), broker.client()
    task_id = new_id()
    worker.store([reply(task_id, states.SUCCESS, "mine", sender.oid)])
    assert other.get([task_id]) == [None]
    probe = broker.transport()
    assert probe.size(sender.oid) == 1
    (meta,) = sender.get([task_id])
    assert meta is not None and meta["result"] == "mine"
    assert probe.size(sender.oid) == 0  # consumed once
    # Read again (another AsyncResult of the same id): this client still has it.
    assert sender.wait([task_id], timeout=0, interval=0.1)[0]["result"] == "mine"
    assert other.get([task_id]) == [None]


def test_latest_state_wins_and_success_sticks(broker: Broker) -> None:
    worker, client = broker.client(), broker.client()
    task_id = new_id()
    worker.store([reply(task_id, states.STARTED, {"pid": 1}, client.oid)])
    worker.store([reply(task_id, "PROGRESS", {"step": 1}, client.oid)])
    (meta,) = client.get([task_id])
    assert meta is not None and (meta["status"], meta["result"]) == ("PROGRESS", {"step": 1})
    worker.store(
        [
            reply(task_id, "PROGRESS", {"step": 2}, client.oid),
            reply(task_id, states.SUCCESS, "done", client.oid),
            reply(task_id, states.FAILURE, exception_to_dict(KeyError("dup")), client.oid),
        ]
    )
    (meta,) = client.wait([task_id], timeout=5, interval=0.1)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, "done")
    # A duplicate delivery after the client read the result changes nothing either.
    worker.store([reply(task_id, states.STARTED, {"pid": 2}, client.oid)])
    assert client.get([task_id])[0] == meta


def test_a_failure_gives_way_to_a_later_success(broker: Broker) -> None:
    worker, client = broker.client(), broker.client()
    task_id = new_id()
    worker.store([reply(task_id, states.FAILURE, exception_to_dict(ValueError()), client.oid)])
    assert client.wait([task_id], timeout=5, interval=0.1)[0]["status"] == states.FAILURE
    worker.store([reply(task_id, states.SUCCESS, 2, client.oid)])
    (meta,) = client.get([task_id])
    assert meta is not None and (meta["status"], meta["result"]) == (states.SUCCESS, 2)


def test_threads_of_one_client_wait_for_their_own_results(broker: Broker) -> None:
    worker, client = broker.client(), broker.client()
    task_ids = [new_id() for _ in range(4)]
    got: dict[str, Any] = {}

    def wait_for(task_id: str) -> None:
        got[task_id] = client.wait([task_id], timeout=20, interval=0.1)[0]["result"]

    threads = [threading.Thread(target=wait_for, args=(task_id,)) for task_id in task_ids]
    for thread in threads:
        thread.start()
    # One publish per result, in reverse order: every waiter must see its own.
    for index, task_id in reversed(list(enumerate(task_ids))):
        worker.store([reply(task_id, states.SUCCESS, index, client.oid)])
    for thread in threads:
        thread.join(timeout=30)
    assert got == {task_id: index for index, task_id in enumerate(task_ids)}


def test_wait_times_out_while_only_unready_states_arrived(broker: Broker) -> None:
    worker, client = broker.client(), broker.client()
    task_id = new_id()
    worker.store([reply(task_id, states.STARTED, None, client.oid)])
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 1 results not ready"):
        client.wait([task_id], timeout=0.3, interval=0.1)
    assert 0.3 <= time.monotonic() - started < 2
    assert client.get([task_id])[0]["status"] == states.STARTED  # type: ignore[index]


def test_many_results_in_one_store_and_one_wait(broker: Broker) -> None:
    worker, client = broker.client(), broker.client()
    task_ids = [new_id() for _ in range(2500)]  # more than one fetch batch
    worker.store(
        [reply(task_id, states.SUCCESS, i, client.oid) for i, task_id in enumerate(task_ids)]
    )
    metas = client.wait(task_ids, timeout=30, interval=0.1)
    assert [meta["result"] for meta in metas] == list(range(2500))


def test_groups_and_chords_are_refused_as_in_celery(broker: Broker) -> None:
    backend = broker.client()
    capabilities = backend.capabilities
    assert capabilities.needs_reply_to and not capabilities.chords
    calls: list[Callable[[], object]] = [
        lambda: backend.save_group(new_id(), []),
        lambda: backend.get_group(new_id()),
        lambda: backend.forget_group(new_id()),
    ]
    for call in calls:
        with pytest.raises(NotImplementedError, match="cannot store groups"):
            call()
    with pytest.raises(NotImplementedError, match="does not support chords"):
        backend.chord_part_return(new_id(), 2, 0, build_meta(new_id(), states.SUCCESS, 1))


def test_without_a_broker_connection_it_says_how_to_make_one() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"app\.backend"):
        create_backend("rpc://")


def test_the_app_reads_replies_on_a_queue_named_by_its_oid(tmp_path: Path) -> None:
    app = Celery("rpcapp", broker=f"sqlite:///{tmp_path / 'broker.db'}", backend="rpc://")
    try:
        backend = app.backend
        assert isinstance(backend, RPCBackend)
        assert backend.oid == app.oid
        assert backend.reply_queue.arguments == {"x-expires": 86_400_000}
        # What a worker sends in reply to this app's task message reaches this app.
        task_id = new_id()
        worker = RPCBackend("rpc://", transport_factory=app.create_transport)
        worker.store([reply(task_id, states.SUCCESS, 7, app.oid)])
        assert app.AsyncResult(task_id).get(timeout=5) == 7
        worker.close()
    finally:
        app.close()


# -- end to end with a celeriac worker, on every broker -------------------------------------


def _reachable(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@pytest.fixture(scope="module")
def amqp_vhost() -> Iterator[str]:
    """A RabbitMQ virtual host for this module, deleted afterwards."""
    if not _reachable(5672):
        pytest.skip("RabbitMQ is not running on 127.0.0.1:5672")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is needed to make a virtual host for the test")
    from tests.conformance.transport_amqp import create_vhost, delete_vhost

    vhost = create_vhost("rpc")
    yield vhost
    delete_vhost(vhost)


def broker_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'broker.db'}"
    if kind == "redis":
        if not _reachable(6379):
            pytest.skip("Redis is not running on 127.0.0.1:6379")
        return REDIS_URL
    vhost = request.getfixturevalue("amqp_vhost")
    return f"{AMQP_URL}/{vhost}"


@pytest.fixture
def queue_name() -> str:
    """A task queue of this test alone, so a shared broker needs no flushing."""
    return f"rpc-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def redis_cleanup(queue_name: str) -> Iterator[list[str]]:
    """Deletes Redis keys naming this test's queue or the given client ids afterwards."""
    names = [queue_name]
    yield names
    if not _reachable(6379):
        return
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for name in names:
            keys = list(client.scan_iter(match=f"*{name}*", count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


TASKS = """
import os
import time

from celeriac import Celery

app = Celery("rpctasks", broker={broker!r}, backend="rpc://")
app.conf.task_default_queue = {queue!r}
app.conf.task_track_started = True
HERE = os.path.dirname(os.path.abspath(__file__))


def wait_for_file(name, within=30.0):
    # The test creates the file when it has seen the state the task is held in.
    path = os.path.join(HERE, name)
    deadline = time.monotonic() + within
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.01)


@app.task
def add(x, y):
    return x + y


@app.task
def boom():
    raise ValueError("bad", 42)


@app.task(bind=True)
def stepwise(self):
    wait_for_file(self.request.id + "-1")
    self.update_state(state="PROGRESS", meta={{"step": 1}})
    wait_for_file(self.request.id + "-2")
    return "done"


@app.task
def die():
    os._exit(3)


@app.task(bind=True, max_retries=1)
def flaky(self):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return self.request.retries
"""


def _tasks_module(
    project: Callable[[dict[str, str]], Path], broker: str, queue: str
) -> tuple[Path, ModuleType]:
    import importlib

    directory = project({"rpctasks.py": TASKS.format(broker=broker, queue=queue)})
    return directory, importlib.import_module("rpctasks")


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ],
)
def test_worker_replies_reach_the_sending_client(
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    queue_name: str,
    redis_cleanup: list[str],
) -> None:
    url = broker_url(kind, tmp_path, request)
    directory, tasks = _tasks_module(project, url, queue_name)
    redis_cleanup.append(tasks.app.oid)
    start_worker(directory, "rpctasks", "-Q", queue_name, "-c", "2")
    try:
        assert tasks.add.delay(2, 3).get(timeout=20) == 5

        with pytest.raises(ValueError) as raised:
            tasks.boom.delay().get(timeout=20)
        assert raised.value.args == ("bad", 42)

        # STARTED (task_track_started), then a custom state, then the result.
        held = tasks.stepwise.delay()
        eventually(lambda: held.state == states.STARTED)
        assert set(held.info) == {"pid", "hostname"}
        (directory / f"{held.id}-1").touch()
        eventually(lambda: held.state == "PROGRESS")
        assert held.info == {"step": 1}
        (directory / f"{held.id}-2").touch()
        assert held.get(timeout=20) == "done"
        assert held.state == states.SUCCESS

        assert tasks.flaky.delay().get(timeout=20) == 1  # the RETRY state gave way

        many = ResultSet([tasks.add.delay(i, i) for i in range(40)])
        assert many.join(timeout=30) == [2 * i for i in range(40)]

        # Another client of the same broker: the results were never sent to it.
        other = Celery("other", broker=url, backend="rpc://")
        redis_cleanup.append(other.oid)
        try:
            assert other.AsyncResult(held.id).state == states.PENDING
        finally:
            other.close()
        assert tasks.app.AsyncResult(held.id).get(timeout=1) == "done"
    finally:
        tasks.app.close()


def test_results_the_worker_stores_without_running_the_task_reach_the_client(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    queue_name: str,
) -> None:
    directory, tasks = _tasks_module(project, broker_url("sqlite", tmp_path, request), queue_name)
    start_worker(directory, "rpctasks", "-Q", queue_name, "-c", "1")
    try:
        unknown = tasks.app.send_task("rpctasks.nope")
        with pytest.raises(Exception, match="nope") as raised:
            unknown.get(timeout=20)
        assert type(raised.value).__name__ == "NotRegistered"

        # Held until its ETA, by which time it has expired: revoked, never run.
        expired = tasks.add.apply_async((1, 1), countdown=2, expires=1)
        with pytest.raises(Exception, match="expired") as raised:
            expired.get(timeout=20)
        assert type(raised.value).__name__ == "TaskRevokedError"
        assert expired.state == states.REVOKED

        lost = tasks.die.delay()
        with pytest.raises(Exception, match="exitcode 3") as raised:
            lost.get(timeout=20)
        assert type(raised.value).__name__ == "WorkerLostError"
    finally:
        tasks.app.close()


def test_a_forked_client_never_takes_its_parents_replies(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    queue_name: str,
) -> None:
    url = broker_url("sqlite", tmp_path, request)
    directory, tasks = _tasks_module(project, url, queue_name)
    start_worker(directory, "rpctasks", "-Q", queue_name, "-c", "1")
    try:
        parents = tasks.add.delay(1, 1)
        probe = SQLiteTransport(url)
        # The parent's replies (STARTED, SUCCESS) wait on the broker, unread.
        eventually(lambda: probe.size(tasks.app.oid) == 2)
        probe.close()
        parent_oid = tasks.app.oid
        pid = os.fork()
        if pid == 0:  # the child: its own oid and queue, so it reads only its own reply
            code = 1
            try:
                own = tasks.add.delay(2, 2)
                code = 0 if tasks.app.oid != parent_oid and own.get(timeout=20) == 4 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert tasks.app.oid == parent_oid
        assert parents.get(timeout=5) == 2
    finally:
        tasks.app.close()


# -- wire compatibility with Celery's rpc backend -------------------------------------------

CELERY_TASKS = """
import os

from celery import Celery

app = Celery("celtasks", broker=os.environ["BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ["QUEUE"]
app.conf.worker_enable_remote_control = False
app.conf.worker_hijack_root_logger = False


@app.task(name="rpctasks.add")
def add(x, y):
    return x + y


@app.task(name="rpctasks.boom")
def boom():
    raise ValueError("bad", 42)


@app.task(name="rpctasks.progress", bind=True)
def progress(self, steps):
    for step in range(steps):
        self.update_state(state="PROGRESS", meta={"step": step})
    return steps
"""

CELERY_CLIENT = """
import json, os, sys

from celery import Celery

app = Celery("celclient", broker=os.environ["BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ["QUEUE"]
out = {"sum": app.send_task("rpctasks.add", (2, 3)).get(timeout=20)}
try:
    app.send_task("rpctasks.boom").get(timeout=20)
except ValueError as exc:
    out["error"] = ["ValueError", list(exc.args)]
print(json.dumps(out))
"""


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def celery_broker(request: pytest.FixtureRequest, tmp_path: Path, redis_cleanup: list[str]) -> str:
    pytest.importorskip("celery")
    return broker_url(request.param, tmp_path, request)


class CeleryWorker:
    """``celery -A celtasks worker -P solo`` in a directory, stopped by the test."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        (directory / "celtasks.py").write_text(textwrap.dedent(CELERY_TASKS))
        self.log = directory / "celery-worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", "celtasks", "worker", "-P", "solo",
            "-l", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=directory, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while "ready." not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Celery worker did not start:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            # Every task of the test is done and acked; Celery's shutdown, warm or cold,
            # waits about ten seconds on RabbitMQ for nothing the test needs.
            self.process.kill()
            self.process.wait()


def _peer_env(directory: Path, broker: str, queue: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(directory), "BROKER": broker, "QUEUE": queue}


@pytest.mark.celery
def test_celery_worker_replies_are_read_by_celeriac(
    celery_broker: str, tmp_path: Path, queue_name: str, redis_cleanup: list[str]
) -> None:
    worker = CeleryWorker(tmp_path, _peer_env(tmp_path, celery_broker, queue_name))
    app = Celery("client", broker=celery_broker, backend="rpc://")
    app.conf.task_default_queue = queue_name
    redis_cleanup.append(app.oid)
    try:
        worker.wait_ready()
        assert app.send_task("rpctasks.add", (2, 3)).get(timeout=20) == 5
        with pytest.raises(ValueError) as raised:
            app.send_task("rpctasks.boom").get(timeout=20)
        assert raised.value.args == ("bad", 42)
        progress = app.send_task("rpctasks.progress", (3,))
        assert progress.get(timeout=20) == 3
        assert progress.state == states.SUCCESS
    finally:
        app.close()
        worker.stop()


@pytest.mark.celery
def test_celeriac_worker_replies_are_read_by_celery(
    celery_broker: str,
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    queue_name: str,
) -> None:
    directory, tasks = _tasks_module(project, celery_broker, queue_name)
    try:
        start_worker(directory, "rpctasks", "-Q", queue_name, "-c", "1")
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(CELERY_CLIENT)],
            env=_peer_env(directory, celery_broker, queue_name),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1]) == {
            "sum": 5,
            "error": ["ValueError", ["bad", 42]],
        }
    finally:
        tasks.app.close()


@pytest.mark.celery
@pytest.mark.amqp
def test_reply_queue_is_declared_before_the_first_task_as_celery_declares_it(
    tmp_path: Path, request: pytest.FixtureRequest, queue_name: str
) -> None:
    kombu = pytest.importorskip("kombu")
    url = broker_url("amqp", tmp_path, request)
    app = Celery("client", broker=url, backend="rpc://")
    app.conf.task_default_queue = queue_name
    try:
        app.send_task("rpctasks.add", (1, 1))  # no worker: the queue must exist anyway
        with kombu.Connection(url) as connection:
            channel = connection.default_channel
            name, messages, _ = channel.queue_declare(app.oid, passive=True)  # it exists
            assert (name, messages) == (app.oid, 0)
            # Celery's own declaration of it: RabbitMQ refuses it unless the arguments match.
            celery_queue = kombu.Queue(
                app.oid, kombu.Exchange(None), app.oid,
                durable=True, auto_delete=True, expires=86400.0,
            )  # fmt: skip
            celery_queue(channel).declare()
    finally:
        app.close()


def _amqp_backend(url: str, oid: str | None = None) -> RPCBackend:
    from celeriac.transports.amqp import AMQPTransport

    return RPCBackend("rpc://", transport_factory=lambda: AMQPTransport(url), oid=oid)


@pytest.mark.celery
@pytest.mark.amqp
def test_a_reply_to_a_missing_queue_makes_it_as_celery_would_with_an_expiry(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kombu = pytest.importorskip("kombu")
    url = broker_url("amqp", tmp_path, request)
    worker, client_id = _amqp_backend(url), new_id()
    try:
        worker.store([reply(new_id(), states.SUCCESS, 1, client_id)])  # its client is gone
        with kombu.Connection(url) as connection:
            channel = connection.default_channel
            assert channel.queue_declare(client_id, passive=True)[1] == 1  # the reply waits
            # ... in a queue that goes away unused, as Celery declares it.
            kombu.Queue(
                client_id, kombu.Exchange(None), client_id,
                durable=True, auto_delete=True, expires=86400.0,
            )(channel).declare()  # fmt: skip
    finally:
        worker.close()


@pytest.mark.celery
@pytest.mark.amqp
def test_a_reply_queue_declared_with_other_arguments_is_still_used(
    tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    kombu = pytest.importorskip("kombu")
    url = broker_url("amqp", tmp_path, request)
    client_id, task_id = new_id(), new_id()
    with kombu.Connection(url) as connection:  # as another Celery version might have
        kombu.Queue(client_id, kombu.Exchange(None), client_id, durable=False)(
            connection.default_channel
        ).declare()
    worker, client = _amqp_backend(url), _amqp_backend(url, oid=client_id)
    try:
        worker.store([reply(task_id, states.SUCCESS, "kept", client_id)])
        assert client.wait([task_id], timeout=10, interval=0.1)[0]["result"] == "kept"
        assert "Cannot declare reply queue" in caplog.text
    finally:
        worker.close()
        client.close()
