"""The Redis transport under the conformance suite (database 12 of the local server).

Every test gets its own ``global_keyprefix`` (the test's name prefix), so its keys, holders
and channels are its own, and cleanup deletes exactly them. Holders expire after 1 s and are
looked for every 0.2 s, so dead-holder tests take about a second, not the default ten.
It runs with ``priority_order="higher_first"``, the contract's order; kombu's default order
(0 first) is covered by tests/test_redis_transport.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from celeriac.transports.base import TransportOptions
from celeriac.transports.redis import RedisTransport

NAME = "redis"
MARKS = (pytest.mark.redis,)
URL = "redis://127.0.0.1:6379/12"
#: Heartbeat expiry (1 s) + a look every 0.2 s, with a wide margin for a loaded machine.
DEAD_HOLDER_SECONDS = 6.0
#: Longer than expiry plus several looks: a live holder must keep its messages throughout.
HOLD_SECONDS = 1.8


def _prefix(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("names").prefix)


def make_transport(tmp_path: Path, request: pytest.FixtureRequest) -> RedisTransport:
    options = TransportOptions(
        transport_options={
            "global_keyprefix": _prefix(request),
            "priority_order": "higher_first",
            "holder_heartbeat_interval": 0.2,
            "holder_expires": 1.0,
            "holder_check_interval": 0.2,
        },
        connection_max_retries=3,
    )
    return RedisTransport(URL, options)


def cleanup(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    client = redis.Redis.from_url(URL)
    try:
        keys = list(client.scan_iter(match=_prefix(request) + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
