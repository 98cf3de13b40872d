"""Fixtures of the Celery interoperability suite: its Redis databases, its RabbitMQ
virtual host, and the directory holding both sides' task modules.

Redis databases 8 (broker) and 9 (results) belong to this suite: they are flushed before
and after it. A lock in database 8 keeps two runs of the suite (say, two developers'
``pytest`` runs on one machine) from flushing each other's messages midway.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.support import AMQP_BROKER, REDIS_BROKER, REDIS_RESULTS, task_modules

redis = pytest.importorskip("redis")
pytest.importorskip("celery")

LOCK_KEY = "celeriac-interop-suite"
VHOST_PREFIX = "celeriac_interop_"
#: The lock lapses this long after the last test began, should a run die without cleaning.
LOCK_SECONDS = 300
#: Below pytest-timeout (120 s), so a long wait fails with this reason, not a timeout.
LOCK_WAIT_SECONDS = 90


def _rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr or done.stdout}")
    return done.stdout


class SuiteLock:
    """This run's hold on databases 8 and 9 (a key in database 8)."""

    def __init__(self) -> None:
        self.broker = redis.Redis.from_url(REDIS_BROKER)
        self.results = redis.Redis.from_url(REDIS_RESULTS)
        self.token = uuid.uuid4().hex

    def acquire(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while not self.broker.set(LOCK_KEY, self.token, nx=True, ex=LOCK_SECONDS):
            if time.monotonic() > deadline:
                pytest.fail("another run of the interop suite holds Redis databases 8 and 9")
            time.sleep(0.5)  # another run is going on: its end cannot be waited for otherwise

    def flush(self) -> None:
        self.broker.flushdb()
        self.results.flushdb()

    def held(self) -> bool:
        return self.broker.get(LOCK_KEY) == self.token.encode()

    def renew(self) -> None:
        self.broker.set(LOCK_KEY, self.token, ex=LOCK_SECONDS)

    def close(self) -> None:
        self.broker.close()
        self.results.close()


@pytest.fixture(scope="session")
def interop_redis() -> Iterator[SuiteLock]:
    """Own databases 8 and 9 for the session: locked, flushed before and after."""
    lock = SuiteLock()
    lock.acquire()
    try:
        lock.flush()
        lock.renew()  # the flush removed it
        yield lock
    finally:
        if lock.held():  # never flush a later run's data
            lock.flush()  # the lock too
        lock.close()


@pytest.fixture(autouse=True)
def _keep_the_lock(interop_redis: SuiteLock) -> None:
    if not interop_redis.held():
        pytest.fail("the interop suite's Redis lock lapsed: another run may have flushed")
    interop_redis.renew()


@pytest.fixture(scope="session")
def amqp_vhost(interop_redis: SuiteLock) -> Iterator[str]:
    """A RabbitMQ virtual host of this session: the broker URL in it."""
    # Under the lock no other run is going on: hosts of runs that were killed go now.
    for stale in _rabbitmqctl("-q", "list_vhosts", "name").split():
        if stale.startswith(VHOST_PREFIX):
            _rabbitmqctl("delete_vhost", stale)
    vhost = f"{VHOST_PREFIX}{uuid.uuid4().hex[:8]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"{AMQP_BROKER}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="module")
def interop_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both task modules in a directory; ``interop_errors`` imported here, so that clients
    of either library re-create its exceptions."""
    directory = task_modules(tmp_path_factory.mktemp("interop"))
    sys.path.insert(0, str(directory))
    importlib.import_module("interop_errors")
    try:
        yield directory
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("interop_errors", None)
