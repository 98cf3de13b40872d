"""The worker's clocks jump while it holds tasks with ETAs.

The worker runs under libfaketime, whose offset the test rewrites while the worker holds
ETA tasks: the clocks of its processes jump and the broker's do not. Both clocks jump,
wall and monotonic, as after a suspended machine resumes (libfaketime 0.9.10 cannot leave
the monotonic clock alone: ``time.sleep`` then fails with EINVAL).

* Forward an hour: tasks due in 30 to 60 minutes are due at once and run, each once;
  nothing the worker holds is taken for lost.
* Back a few seconds: tasks due in 2 to 3 s run that much later, each once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.worker_harness import MODULE
from tests.faults.conftest import Broker
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

pytestmark = pytest.mark.faults

FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
NOW = 60
HELD = 30


def delayed(
    module: ModuleType, kind: str, rng: random.Random, low: float, high: float
) -> list[str]:
    task = getattr(module, kind)
    return [
        task.apply_async((rng.uniform(0.02, 0.04),), countdown=rng.uniform(low, high)).id
        for _ in range(HELD)
    ]


@pytest.mark.parametrize(("jump", "low", "high"), [(3600, 1800, 3600), (-5, 2, 3)])
@pytest.mark.parametrize("kind", KINDS)
def test_clock_jump_with_etas_held(
    kind: str,
    jump: int,
    low: float,
    high: float,
    broker: Broker,
    rng: random.Random,
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    if not FAKETIME.exists():
        pytest.fail(f"{FAKETIME} is missing: apt-get install libfaketime")
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    env = {
        "LD_PRELOAD": str(FAKETIME),
        "FAKETIME_TIMESTAMP_FILE": str(clock),
        "FAKETIME_NO_CACHE": "1",
    }
    directory, wtasks = load_app(project, tmp_path, **broker.settings)
    request.addfinalizer(wtasks.app.close)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY), env=env)
    held = delayed(wtasks, kind, rng, low, high)
    sent = publish(wtasks, kind, rng, NOW)
    run_some_more(directory, rng)

    clock.write_text(f"{jump:+d}\n")

    # No process dies and no connection is cut: nothing may be lost or run twice.
    runs = settle(directory, held + sent, Faults(), timeout=30, quiet=broker.quiet)
    assert worker.process.poll() is None, worker.output
    check(f"clock {jump:+d} s, {broker.name}, {kind}", kind, runs, held + sent, Faults())
    assert worker.stop() == 0, worker.output
