"""Brokers of one's own for a test session: an emptied Redis database, a RabbitMQ vhost."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.conformance.transport_amqp import BROKER as AMQP_SERVER
from tests.conformance.transport_amqp import create_vhost, delete_vhost


@contextlib.contextmanager
def redis_database(url: str) -> Iterator[str]:
    """``url``'s Redis database, emptied before and after: a suite's own number."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@contextlib.contextmanager
def amqp_vhost(label: str) -> Iterator[str]:
    """The URL of a new RabbitMQ virtual host, deleted afterwards."""
    vhost = create_vhost(label)
    try:
        yield f"{AMQP_SERVER}/{vhost}"
    finally:
        delete_vhost(vhost)
