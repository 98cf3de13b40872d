"""The layer below the transports and the result backends: one rule per URL form, the same
at the broker's call site and the result backend's.

The tests that touch Redis use database 11 (the Redis transport tests' own) with keys of
their own, deleted afterwards.
"""

from __future__ import annotations

import sqlite3
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from celeriac import states
from celeriac.backends import create_backend
from celeriac.backends.sqlite import SQLiteBackend
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Envelope
from celeriac.protocol.results import build_meta
from celeriac.transports import create_transport
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.wire.redis.connection import redis_py_url
from celeriac.wire.redis.pubsub import Subscriber
from celeriac.wire.sqlite import database_path
from celeriac.wire.urls import SchemeRegistry, safe_url

REDIS_DB = 11

# -- Redis URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://", "redis://localhost"),
        ("redis://h:6380/3", "redis://h:6380?db=3"),
        ("redis://:pw@h/2", "redis://:pw@h?db=2"),
        ("redis://:pw@", "redis://:pw@localhost"),
        # redis-py's ?db= first, then the path (kombu), then ?virtual_host= (Celery).
        ("redis://h/3?db=4", "redis://h?db=4"),
        ("redis://h/3?virtual_host=4", "redis://h?db=3"),
        ("redis://h?virtual_host=/4", "redis://h?db=4"),
        ("redis+socket:///run/redis.sock?virtual_host=4", "unix:/run/redis.sock?db=4"),
        ("redis+socket:///run/redis.sock?db=2", "unix:/run/redis.sock?db=2"),
        # Celery's and kombu's spellings of ssl_cert_reqs, in redis-py's.
        ("rediss://h/0?ssl_cert_reqs=CERT_NONE", "rediss://h?ssl_cert_reqs=none&db=0"),
        ("rediss://h?ssl_cert_reqs=CERT_REQUIRED", "rediss://h?ssl_cert_reqs=required"),
        ("rediss://h?ssl_cert_reqs=CERT_OPTIONAL", "rediss://h?ssl_cert_reqs=optional"),
        ("rediss://h?ssl_cert_reqs=required", "rediss://h?ssl_cert_reqs=required"),
        ("rediss://h?ssl_cert_reqs=none", "rediss://h?ssl_cert_reqs=none"),
    ],
)
def test_redis_urls_mean_what_they_mean_to_celery(url: str, expected: str) -> None:
    assert redis_py_url(url, "broker_url") == expected


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("redis://h/zero", "'zero' is not a database number"),
        ("redis+socket:///run/redis.sock?virtual_host=x", "'x' is not a database number"),
        ("rediss://h?ssl_cert_reqs=REQUIRED", "ssl_cert_reqs='REQUIRED'; use CERT_REQUIRED"),
        ("redis://h?ssl_cert_reqs=required", "ssl_cert_reqs need a rediss:// URL"),
        ("http://h", "is not a Redis URL"),
    ],
)
def test_redis_urls_celery_refuses_are_refused(url: str, error: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=error):
        redis_py_url(url, "broker_url")


def test_both_redis_call_sites_refuse_a_bad_url_naming_their_setting() -> None:
    url = "redis://:secret@h/0?ssl_cert_reqs=none"
    with pytest.raises(ImproperlyConfigured, match=r"^broker_url 'redis://:\*\*\*\*@h/0") as raised:
        create_transport(url)
    assert "secret" not in str(raised.value)
    with pytest.raises(ImproperlyConfigured, match=r"^result_backend 'redis://:\*\*\*\*@h/0"):
        create_backend(url)


@pytest.fixture
def raw() -> Iterator[redis.Redis]:
    client = redis.Redis(db=REDIS_DB)
    yield client
    client.close()


@pytest.mark.redis
def test_both_redis_call_sites_use_the_database_the_url_names(raw: redis.Redis) -> None:
    url = f"redis://127.0.0.1:6379?virtual_host={REDIS_DB}"
    queue, task_id = f"wire-{uuid.uuid4().hex}", str(uuid.uuid4())
    transport = create_transport(url)
    backend = create_backend(url)
    try:
        transport.publish([Envelope(b"1", {}, {}, routing_key=queue)])
        backend.store([build_meta(task_id, states.SUCCESS, 1)])

        assert raw.llen(queue) == 1
        assert raw.exists(f"celery-task-meta-{task_id}")
    finally:
        transport.close()
        backend.close()
        raw.delete(queue, f"celery-task-meta-{task_id}")


@pytest.mark.redis
def test_a_subscriber_gets_what_is_published_after_the_confirmation(raw: redis.Redis) -> None:
    channel = f"wire-{uuid.uuid4().hex}"
    pool = redis.ConnectionPool(db=REDIS_DB)
    subscriber = Subscriber(pool)
    try:
        assert subscriber.subscribe([channel], time.monotonic() + 5)
        assert subscriber.subscribe([f"{channel}.*"], time.monotonic() + 5, patterns=True)
        raw.publish(channel, b"direct")
        raw.publish(f"{channel}.fanout", b"by pattern")

        assert subscriber.next_push(5) == [b"message", channel.encode(), b"direct"]
        pushed = subscriber.next_push(5)
        assert pushed is not None and pushed[0] == b"pmessage" and pushed[-1] == b"by pattern"
        subscriber.unsubscribe([channel])
        assert subscriber.next_push(0.05) == [b"unsubscribe", channel.encode(), 1]
        assert not subscriber.broken
    finally:
        subscriber.close()
        pool.disconnect()


# -- SQLite URLs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("sqlite:///broker.db", "broker.db"),
        ("db+sqlite:///results.db", "results.db"),
        ("sqlite:///sub/r.db?timeout=5", "sub/r.db"),
    ],
)
def test_three_slashes_are_relative_to_the_working_directory(
    url: str, relative: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert database_path(url, "broker_url") == tmp_path.resolve() / relative


def test_four_slashes_are_absolute() -> None:
    assert database_path("db+sqlite:////var/lib/r.db", "result_backend") == Path("/var/lib/r.db")


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:///:memory:", "names no database file"),
        ("db+sqlite:///:memory:", "memory:// keeps them inside one process"),
        ("sqlite://host/r.db", "names no database file"),
        ("redis://h/0", "is not a sqlite:/// URL"),
    ],
)
def test_sqlite_urls_without_a_file_are_refused(url: str, error: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=error):
        database_path(url, "broker_url")


def test_both_sqlite_call_sites_open_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    transport = SQLiteTransport("sqlite:///link/data.db")
    backend = SQLiteBackend(f"db+sqlite:///{tmp_path}/real/data.db")
    try:
        assert transport.path == backend.path == (tmp_path / "real" / "data.db").resolve()
        with sqlite3.connect(backend.path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        transport.close()
        backend.close()


def test_both_sqlite_call_sites_refuse_a_url_without_a_file_naming_their_setting() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"^broker_url 'sqlite://' names no"):
        SQLiteTransport("sqlite://")
    with pytest.raises(ImproperlyConfigured, match=r"^result_backend 'db\+sqlite://' names no"):
        SQLiteBackend("db+sqlite://")


# -- the scheme registry -------------------------------------------------------------------


def test_both_registries_name_an_unknown_scheme_without_its_password() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"unknown transport 'redsi' \(did you mean"):
        create_transport("redsi://:secret@h")
    with pytest.raises(ImproperlyConfigured, match=r"unknown backend 'redsi' \(did you mean"):
        create_backend("redsi://:secret@h")
    assert safe_url("redsi://:secret@h") == "redsi://:****@h"


def test_a_missing_driver_is_named_with_the_extra_that_installs_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)
    registry: SchemeRegistry[type] = SchemeRegistry("broker_url", "transport", {})
    registry.register("rediss", "redis:Redis")
    with pytest.raises(ImproperlyConfigured, match=r"\(redis\): pip install 'celeriac\[redis\]'"):
        registry.find("rediss://h")
