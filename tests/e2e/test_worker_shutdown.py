"""Shutdown end to end: warm (first signal) lets running tasks finish and gives back what did
not start; cold (second signal) stops at once, and only late-acked messages come back."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from celeriac.exceptions import TimeLimitExceeded
from celeriac.result import AsyncResult
from tests.e2e.worker_harness import broker, load, open_gate, runs, take_all, wait_until
from tests.support import WorkerProcess

TASKS = """
def hold(task_id):
    note(f"ran-{task_id}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not gate_open(task_id):
        time.sleep(0.01)
    return "rested"

@app.task(bind=True)
def nap(self):
    return hold(self.request.id)

@app.task(bind=True, acks_late=True)
def late_nap(self):
    return hold(self.request.id)

@app.task(bind=True, time_limit=1.0)
def stuck(self):
    return hold(self.request.id)
"""

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


def started(directory: Path, *results: AsyncResult) -> None:
    """Wait until each task has begun running."""
    for task_id in (result.id for result in results):
        wait_until(lambda: runs(directory, task_id), message=f"task {task_id} started")  # noqa: B023


def queued_ids(wtasks: ModuleType, queue: str = "celery") -> list[str]:
    with broker(wtasks) as transport:
        taken = take_all(transport, queue)
        transport.reject(taken, requeue=True)
    return [delivery.envelope.headers["id"] for delivery in taken]


def warm_stop(worker: WorkerProcess, directory: Path, running: AsyncResult) -> int:
    """SIGTERM while ``running`` runs; the worker waits for it, then exits."""
    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for_output("Warm shutdown")
    assert worker.process.poll() is None  # still waiting for the running task
    open_gate(directory, running.id)
    worker.process.wait(timeout=10)  # on its own: another signal would make it a cold one
    return worker.stop()


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_warm_shutdown_finishes_the_running_task_and_gives_back_the_rest(
    pool: str, project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-P", pool, "-c", "1")
    running = wtasks.nap.delay()
    waiting = [wtasks.nap.delay() for _ in range(3)]
    waiting.append(wtasks.nap.apply_async(countdown=60))  # held by the worker for its ETA
    started(directory, running)

    assert warm_stop(worker, directory, running) == 0

    assert running.get(timeout=1) == "rested"
    assert not any(runs(directory, result.id) for result in waiting)
    assert all(result.state == "PENDING" for result in waiting)
    assert sorted(queued_ids(wtasks)) == sorted(result.id for result in waiting)


def test_next_worker_runs_what_a_warm_shutdown_gave_back(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    first = start_worker(directory, "wtasks", "-c", "1")
    running = wtasks.nap.delay()
    waiting = [wtasks.nap.delay() for _ in range(3)]
    started(directory, running)
    assert warm_stop(first, directory, running) == 0

    for result in waiting:
        open_gate(directory, result.id)
    start_worker(directory, "wtasks", "-c", "1")

    assert [result.get(timeout=10) for result in [running, *waiting]] == ["rested"] * 4


def test_warm_shutdown_still_enforces_hard_time_limits(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-c", "1")
    stuck = wtasks.stuck.delay()
    started(directory, stuck)

    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(timeout=10) == 0  # the time limit ended the wait, not a kill

    with pytest.raises(TimeLimitExceeded):
        stuck.get(timeout=1)


def test_cold_shutdown_gives_back_late_acked_tasks_only(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-c", "2")
    early = wtasks.nap.delay()
    late = wtasks.late_nap.delay()
    started(directory, early, late)

    worker.process.send_signal(signal.SIGTERM)
    worker.wait_for_output("Warm shutdown")
    signalled = time.monotonic()
    worker.stop(signal.SIGTERM)

    assert time.monotonic() - signalled < 5.0
    assert "Cold shutdown" in worker.output
    assert queued_ids(wtasks) == [late.id]  # the early-acked one is gone for good
    assert early.state == late.state == "PENDING"


def test_sigint_twice_is_also_warm_then_cold(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-P", "threads", "-c", "1")
    late = wtasks.late_nap.delay()
    started(directory, late)

    worker.process.send_signal(signal.SIGINT)
    worker.wait_for_output("Warm shutdown")
    worker.stop(signal.SIGINT)

    assert "Cold shutdown" in worker.output
    assert queued_ids(wtasks) == [late.id]
