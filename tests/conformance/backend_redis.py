"""The Redis result backend under the conformance suite (database 13 of the local server).

Child processes open the backend by URL alone, so keys cannot carry a per-test prefix: task
and group ids are random, and cleanup shortens every key's life in this database to a
minute at most instead of deleting it, so a concurrent run of the suite is never disturbed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from celeriac.backends.base import BackendOptions
from celeriac.backends.redis import RedisBackend

NAME = "redis"
MARKS = (pytest.mark.redis,)
URL = "redis://127.0.0.1:6379/13"


def make_backend(
    tmp_path: Path, request: pytest.FixtureRequest, options: BackendOptions
) -> RedisBackend:
    return RedisBackend(URL, options)


def cleanup(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    client = redis.Redis.from_url(URL)
    try:
        pipe = client.pipeline(transaction=False)
        for key in client.scan_iter(count=1000):
            pipe.expire(key, 60, lt=True)  # LT: never lengthens; sets it on keys without one
        pipe.execute()
    finally:
        client.close()
