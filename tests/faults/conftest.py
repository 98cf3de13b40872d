"""Fixtures of the fault tests: a seeded random generator per test, a Redis server of the
test's own, the broker a test runs on, and the table of ledger counts at the end of the
session."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.redis_server import RedisServer
from tests.faults.ledger import TALLIES

#: ``FAULTS_SEED=<n>`` replays a run with other kill points; each test mixes in its own id.
SEED = int(os.environ.get("FAULTS_SEED", "20261207"))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{SEED}:{request.node.nodeid}")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """No persistence: these tests never restart it, and an fsync per write would only slow
    the load down."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(data, durable=False)
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Broker:
    name: str
    #: How long the ledger must stay unchanged once settled: longer than the broker takes
    #: to hand a dead consumer's messages to the next one.
    quiet: float
    settings: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def broker(request: pytest.FixtureRequest) -> Broker:
    if request.param == "sqlite":
        # The default broker of the task module: a file next to it. Dead holders are
        # looked for about once a second.
        return Broker("sqlite", quiet=1.5)
    server: RedisServer = request.getfixturevalue("redis_server")
    # A killed worker's messages come back once its heartbeat key expires (10 s by
    # default); 2 s keeps the test short and is still 8 missed beats.
    options = {
        "holder_heartbeat_interval": 0.25,
        "holder_expires": 2.0,
        "holder_check_interval": 0.25,
    }
    return Broker(
        "redis", quiet=2.5, settings={"broker": server.url, "broker_transport_options": options}
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLIES:
        return
    terminalreporter.section(f"fault ledger (FAULTS_SEED={SEED})")
    terminalreporter.write_line(
        f"{'scenario':<40} {'sent':>5} {'runs':>5} {'lost':>5} {'dup':>4} "
        f"{'dup after finish':>16} {'faults':>6}"
    )
    for t in TALLIES:
        terminalreporter.write_line(
            f"{t.scenario:<40} {t.sent:>5} {t.runs:>5} {t.lost:>5} {t.duplicates:>4} "
            f"{t.finished_earlier:>16} {t.faults:>6}"
        )
