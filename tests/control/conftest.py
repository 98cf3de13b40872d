"""Fixtures of the remote-control tests: brokers, and nodes answering in threads.

Brokers: the embedded SQLite broker (a file of the test), Redis database 6 (flushed
before and after the session) and a RabbitMQ virtual host of the session (deleted at its
end). Every :class:`Cluster` has a ``control_exchange`` of its own, so nodes of one test
never hear another's requests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import celeriac
from celeriac.control import Control, Handler, Node
from celeriac.transports.base import Transport
from tests.brokers import amqp_vhost, redis_database

REDIS_URL = "redis://127.0.0.1:6379/6"

BROKERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("amqp", id="amqp", marks=pytest.mark.amqp),
]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Redis database 6, this suite's own: empty before and after the session."""
    with redis_database(REDIS_URL) as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ virtual host of the session: the broker URL in it."""
    with amqp_vhost("control") as url:
        yield url


def url_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/broker.db"
    return str(request.getfixturevalue(f"{kind}_url"))


@pytest.fixture(params=BROKERS)
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of(request.param, request, tmp_path)


class Cluster:
    """A calling app and nodes answering in threads, on one broker; all closed at the end."""

    def __init__(self, url: str, namespace: str | None = None) -> None:
        namespace = namespace or f"test-{uuid.uuid4().hex[:10]}"
        self.app = celeriac.Celery("control-tests", broker=url, control_exchange=namespace)
        self.control = Control(self.app)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transports: list[Transport] = []

    def transport(self) -> Transport:
        transport = self.app.create_transport()
        self._transports.append(transport)
        return transport

    def node(self, nodename: str, handlers: Mapping[str, Handler]) -> Node:
        """A node listening (its queue declared) and answering in a thread of its own."""
        node = Node(nodename, self.control.mailbox, self.transport(), handlers)
        node.listen()
        thread = threading.Thread(target=node.run, args=(self._stop, 0.05), daemon=True)
        thread.start()
        self._threads.append(thread)
        return node

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        for transport in self._transports:
            transport.close()
        self.control.close()
        self.app.close()


@pytest.fixture
def cluster(broker_url: str) -> Iterator[Cluster]:
    cluster = Cluster(broker_url)
    try:
        yield cluster
    finally:
        cluster.close()


def pong() -> dict[str, Any]:
    return {"ok": "pong"}
