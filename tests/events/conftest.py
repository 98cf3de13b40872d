"""Brokers for the event tests: in memory, SQLite, Redis database 7 and a RabbitMQ virtual
host of this session (created on first use, deleted at the end).

Redis database 7 belongs to these tests: it is flushed before and after the session.
Events on Redis travel over Pub/Sub, whose channels every database shares; kombu's and
celeriac's channel names carry the database number (``/7.celeryev/...``), so nobody else's
events reach them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.events import EventDispatcher, EventReceiver
from celeriac.transports.base import Transport, TransportOptions
from celeriac.transports.registry import create_transport
from tests.brokers import amqp_vhost, redis_database

REDIS_URL = "redis://127.0.0.1:6379/7"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_database(REDIS_URL) as url:
        yield url


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with amqp_vhost("events") as url:
        yield url


class Broker:
    """Transports on one broker, all closed after the test."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.created: list[Transport] = []

    def transport(self) -> Transport:
        transport = create_transport(self.url, TransportOptions(connection_max_retries=3))
        self.created.append(transport)
        return transport

    def dispatcher(self, hostname: str = "w1@events-test", **options: Any) -> EventDispatcher:
        return EventDispatcher(self.transport(), hostname, **options)

    def receiver(self, handlers: Any = None, **options: Any) -> EventReceiver:
        """A receiver whose queue is bound already."""
        receiver = EventReceiver(self.transport(), handlers, **options)
        receiver.declare()
        return receiver

    def close(self) -> None:
        for transport in self.created:
            transport.close()


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"memory://events-{uuid.uuid4().hex[:8]}"


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.getfixturevalue("redis_url"))


def _amqp(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(request.getfixturevalue("amqp_url"))


BROKERS: list[tuple[str, Callable[[pytest.FixtureRequest, Path], str], tuple[object, ...]]] = [
    ("memory", _memory, ()),
    ("sqlite", _sqlite, ()),
    ("redis", _redis, (pytest.mark.redis,)),
    ("amqp", _amqp, (pytest.mark.amqp,)),
]


@pytest.fixture(
    params=[pytest.param(url, id=name, marks=list(marks)) for name, url, marks in BROKERS]
)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    made = Broker(request.param(request, tmp_path))
    try:
        yield made
    finally:
        made.close()
