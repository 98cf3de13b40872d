"""A stalled Redis: the test's own redis-server is stopped with SIGSTOP for a few seconds
under load, then resumed. Connections stay open and every command waits; nothing is lost
and, the stall being shorter than ``holder_expires`` (10 s), nobody is taken for dead, so
nothing runs twice."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.redis_server import RedisServer
from tests.e2e.worker_harness import MODULE
from tests.faults.ledger import (
    CONCURRENCY,
    KINDS,
    Faults,
    check,
    load_app,
    publish,
    run_some_more,
    settle,
)
from tests.support import WorkerProcess

pytestmark = [pytest.mark.faults, pytest.mark.redis]

SENT = 150


@pytest.mark.parametrize("kind", KINDS)
def test_redis_frozen_under_load(
    kind: str,
    redis_server: RedisServer,
    rng: random.Random,
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    directory, wtasks = load_app(project, tmp_path, broker=redis_server.url)
    request.addfinalizer(wtasks.app.close)
    sent = publish(wtasks, kind, rng, SENT)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))
    run_some_more(directory, rng)

    redis_server.freeze()
    try:
        time.sleep(rng.uniform(2.0, 3.0))
    finally:
        redis_server.thaw()

    # One fault that explains nothing: no task may be lost or run twice.
    runs = settle(directory, sent, Faults(count=1))
    assert worker.process.poll() is None, worker.output
    check(f"redis SIGSTOP 2-3 s, {kind}", kind, runs, sent, Faults(count=1))
    assert worker.stop() == 0, worker.output
