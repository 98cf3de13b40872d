"""Fixtures of the fault tests: a seeded random generator per test, a Redis server of the
test's own, and the table of ledger counts at the end of the session."""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

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
