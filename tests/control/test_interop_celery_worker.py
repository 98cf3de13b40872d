"""celeriac's client controls a real Celery 5 worker, on Redis and RabbitMQ.

One Celery worker (``celery worker -P solo``) per broker serves the tests of this module.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import celeriac
from celeriac.control import Control
from tests.control.conftest import url_of
from tests.interop.support import CeleryWorkerProcess
from tests.support import write_project

pytest.importorskip("celery")

pytestmark = [pytest.mark.celery]

NODE = "celery-peer@test"
PATIENCE = 20.0

WORKER_MODULE = """
import os

from celery import Celery

app = Celery("control_peer", broker=os.environ["CONTROL_BROKER"])
app.conf.task_default_queue = os.environ["CONTROL_QUEUE"]


@app.task(name="control.add")
def add(x, y):
    return x + y
"""


class Peer:
    def __init__(self, url: str, queue: str, worker: CeleryWorkerProcess) -> None:
        self.queue = queue
        self.worker = worker
        self.app = celeriac.Celery("celeriac-client", broker=url)
        self.control = Control(self.app)

    def wait_until_it_answers(self) -> None:
        """Celery subscribes to the broadcast channel once its loop runs, after "ready"."""
        deadline = time.monotonic() + PATIENCE
        while not self.control.ping([NODE], timeout=0.5):
            if time.monotonic() > deadline:
                raise AssertionError(f"the Celery worker never answered:\n{self.worker.output}")

    def close(self) -> None:
        self.control.close()
        self.app.close()
        self.worker.stop()


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("amqp", id="amqp", marks=pytest.mark.amqp),
    ],
)
def peer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Peer]:
    project = write_project(tmp_path_factory.mktemp("peer"), {"control_peer.py": WORKER_MODULE})
    url = url_of(request.param, request, project)
    queue = f"control-peer-{uuid.uuid4().hex[:8]}"
    env = {"PYTHONPATH": str(project), "CONTROL_BROKER": url, "CONTROL_QUEUE": queue}
    worker = CeleryWorkerProcess(project, "control_peer", ["-P", "solo", "-n", NODE], env=env)
    peer = Peer(url, queue, worker)
    try:
        worker.wait_ready()
        peer.wait_until_it_answers()
        yield peer
    finally:
        peer.close()


def test_ping(peer: Peer) -> None:
    assert peer.control.ping([NODE], timeout=PATIENCE) == [{NODE: {"ok": "pong"}}]
    assert peer.control.inspect().ping() == {NODE: {"ok": "pong"}}
    assert peer.control.ping(["nobody@test"], timeout=0.2) == []


@pytest.mark.parametrize(("pattern", "matcher"), [("celery-peer@*", "glob"), (r"^celery-", "pcre")])
def test_pattern(peer: Peer, pattern: str, matcher: str) -> None:
    inspect = peer.control.inspect(timeout=PATIENCE, limit=1, pattern=pattern, matcher=matcher)

    assert inspect.ping() == {NODE: {"ok": "pong"}}


def test_inspect(peer: Peer) -> None:
    inspect = peer.control.inspect([NODE], timeout=PATIENCE)

    assert inspect.registered() == {NODE: ["control.add"]}
    assert [queue["name"] for queue in _reply(inspect.active_queues())] == [peer.queue]
    assert _reply(inspect.stats())["pid"] == peer.worker.process.pid
    assert set(_reply(inspect.clock())) == {"clock"}
    assert inspect.active() == inspect.reserved() == inspect.scheduled() == {NODE: []}
    assert inspect.query_task("unknown") == {NODE: {}}
    assert "celery" in _reply(inspect.report())["ok"]


def test_revoke_and_rate_limit(peer: Peer) -> None:
    task_id = str(uuid.uuid4())
    inspect = peer.control.inspect([NODE], timeout=PATIENCE)

    replies = peer.control.revoke(task_id, [NODE], reply=True, timeout=PATIENCE)
    assert replies == [{NODE: {"ok": f"tasks {{'{task_id}'}} flagged as revoked"}}]
    assert task_id in _reply(inspect.revoked())

    replies = peer.control.rate_limit("control.add", "10/m", [NODE], reply=True, timeout=PATIENCE)
    assert replies == [{NODE: {"ok": "new rate limit set successfully"}}]


def test_unknown_command(peer: Peer) -> None:
    replies = peer.control.broadcast("nosuch", destination=[NODE], reply=True, timeout=PATIENCE)

    assert replies == [{NODE: {"error": "KeyError('nosuch')"}}]


def _reply(by_node: dict[str, Any] | None) -> Any:
    assert by_node is not None and set(by_node) == {NODE}
    return by_node[NODE]
