"""Shutdown end to end: warm (first signal) lets running tasks finish and gives back what did
not start; cold (second signal) stops at once, and only late-acked messages come back."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.e2e.worker_harness import broker, load, take_all, wait_until
from tests.support import WorkerProcess

TASKS = """
@app.task(bind=True)
def nap(self, seconds):
    note(f"started-{self.request.id}")
    time.sleep(seconds)
    return "rested"

@app.task(bind=True, acks_late=True)
def late_nap(self, seconds):
    note(f"started-{self.request.id}")
    time.sleep(seconds)
    return "rested"
"""

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


def started(directory: Path, *results: object) -> None:
    """Wait until each task (an AsyncResult) has begun running."""
    for result in results:
        marker = directory / f"started-{result.id}"  # type: ignore[attr-defined]
        wait_until(marker.exists, message=f"task {result.id} started")  # type: ignore[attr-defined]


def queued_ids(wtasks: ModuleType, queue: str = "celery") -> list[str]:
    with broker(wtasks) as transport:
        taken = take_all(transport, queue)
        transport.reject(taken, requeue=True)
    return [delivery.envelope.headers["id"] for delivery in taken]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_warm_shutdown_finishes_the_running_task_and_gives_back_the_rest(
    pool: str, project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-P", pool, "-c", "1")
    running = wtasks.nap.delay(1.0)
    waiting = [wtasks.nap.delay(0.01) for _ in range(3)]
    started(directory, running)

    signalled = time.monotonic()
    assert worker.stop(signal.SIGTERM) == 0

    assert running.get(timeout=1) == "rested"
    assert time.monotonic() - signalled < 3.0
    assert "Warm shutdown" in worker.output
    assert not any((directory / f"started-{result.id}").exists() for result in waiting)
    assert all(result.state == "PENDING" for result in waiting)
    assert sorted(queued_ids(wtasks)) == sorted(result.id for result in waiting)


def test_next_worker_runs_what_a_warm_shutdown_gave_back(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    first = start_worker(directory, "wtasks", "-c", "1")
    running = wtasks.nap.delay(0.5)
    waiting = [wtasks.nap.delay(0.01) for _ in range(3)]
    started(directory, running)
    assert first.stop(signal.SIGTERM) == 0

    start_worker(directory, "wtasks", "-c", "1")

    assert [result.get(timeout=10) for result in [running, *waiting]] == ["rested"] * 4


def test_cold_shutdown_gives_back_late_acked_tasks_only(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-c", "2")
    early = wtasks.nap.delay(30)
    late = wtasks.late_nap.delay(30)
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
    late = wtasks.late_nap.delay(30)
    started(directory, late)

    worker.process.send_signal(signal.SIGINT)
    worker.wait_for_output("Warm shutdown")
    worker.stop(signal.SIGINT)

    assert "Cold shutdown" in worker.output
    assert queued_ids(wtasks) == [late.id]
