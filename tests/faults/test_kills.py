"""SIGKILL under load: the whole worker (started again after each kill), or one pool child.

A few hundred short tasks, killed at seeded random points of the drain (after 8 to 30
more tasks have run), on the embedded SQLite broker and on a Redis server of the test's
own; each kind of ack on its own.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.worker_harness import MODULE, wait_until
from tests.faults.conftest import Broker
from tests.faults.ledger import (
    CONCURRENCY,
    KINDS,
    Faults,
    check,
    finished,
    load_app,
    publish,
    read,
    run_some_more,
    settle,
)
from tests.faults.processes import children, kill_worker
from tests.support import WorkerProcess

pytestmark = pytest.mark.faults

INITIAL = 160
#: Sent while the killed worker is down, so the broker holds new work across the outage.
PER_KILL = 20
KILLS = 4

#: The bug the whole-worker kills show (see docs/faults.md, "Bugs found").
StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


@pytest.mark.parametrize("kind", KINDS)
def test_worker_killed_under_load(
    kind: str,
    broker: Broker,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
) -> None:
    directory, wtasks = load_app(project, tmp_path, **broker.settings)
    request.addfinalizer(wtasks.app.close)
    sent = publish(wtasks, kind, rng, INITIAL)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))
    faults = Faults()

    for kill in range(KILLS):
        run_some_more(directory, rng)
        # Every other kill spares the children: they must die of their parent's death.
        at = time.time()
        faults.kill(kill_worker(worker, with_children=kill % 2 == 1), at)
        sent += publish(wtasks, kind, rng, PER_KILL)
        worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))

    runs = settle(directory, sent, faults, quiet=broker.quiet)
    assert worker.process.poll() is None, worker.output
    check(f"worker SIGKILL x{KILLS}, {broker.name}, {kind}", kind, runs, sent, faults)


@pytest.mark.parametrize("kind", KINDS)
def test_pool_children_killed_under_load(
    kind: str,
    broker: Broker,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
) -> None:
    directory, wtasks = load_app(project, tmp_path, **broker.settings)
    request.addfinalizer(wtasks.app.close)
    sent = publish(wtasks, kind, rng, INITIAL + KILLS * PER_KILL)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))
    faults = Faults()

    for _ in range(KILLS):
        run_some_more(directory, rng)
        pool = wait_until(lambda: children(worker.process.pid), message="pool children")
        victim = rng.choice(pool)
        at = time.time()
        os.kill(victim, signal.SIGKILL)
        faults.kill([victim], at)

    runs = settle(directory, sent, faults, quiet=broker.quiet)
    assert worker.process.poll() is None, worker.output
    scenario = f"child SIGKILL x{KILLS}, {broker.name}, {kind}"
    check(scenario, kind, runs, sent, faults, only_running=True)


def test_task_finished_before_its_child_is_killed_runs_once(
    tmp_path: Path, project: Project, start_worker: StartWorker, request: pytest.FixtureRequest
) -> None:
    """The child kill above, reduced: one child, one batch of four, killed in the second."""
    directory, wtasks = load_app(project, tmp_path)
    request.addfinalizer(wtasks.app.close)
    # Sent before the worker starts: one fetch, so the only child gets all four at once.
    sent = [r.id for r in wtasks.late.delay_many([(0.3,)] * 4)]
    start_worker(directory, MODULE, "-c", "1")
    wait_until(lambda: len(read(directory)) >= 2, message="the second task running")
    finished_one, running = read(directory)[:2]
    assert finished_one.ended is not None
    assert [finished_one.task_id, running.task_id] == sent[:2]

    faults = Faults()
    faults.kill([running.pid], time.time())
    os.kill(running.pid, signal.SIGKILL)

    runs = settle(directory, sent, faults, quiet=0.5)
    # The first had finished, unreported, in the killed child: it must not run again.
    assert [finished(runs)[task_id] for task_id in sent] == [1, 1, 1, 1]


def test_tasks_finished_before_their_worker_is_killed_run_once(
    tmp_path: Path, project: Project, start_worker: StartWorker, request: pytest.FixtureRequest
) -> None:
    """The whole worker killed in the third of four tasks its only child holds."""
    directory, wtasks = load_app(project, tmp_path)
    request.addfinalizer(wtasks.app.close)
    sent = [r.id for r in wtasks.late.delay_many([(0.3,)] * 4)]
    worker = start_worker(directory, MODULE, "-c", "1")
    wait_until(lambda: len(read(directory)) >= 3, message="the third task running")
    faults = Faults()
    at = time.time()
    faults.kill(kill_worker(worker, with_children=True), at)
    start_worker(directory, MODULE, "-c", "1")

    runs = settle(directory, sent, faults, quiet=1.5)
    # The first two had ended 0.6 s and 0.3 s before the kill (reported and acked then);
    # the third, cut short, ends once, in the new worker.
    assert [finished(runs)[task_id] for task_id in sent] == [1, 1, 1, 1]
