"""Lost workers end to end: a child process that dies is replaced and its task fails with
``WorkerLostError`` (or comes back, per ``reject_on_worker_lost``); a whole worker killed
with SIGKILL gives its late-acked messages back to the next worker, and only then."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac.exceptions import WorkerLostError
from celeriac.protocol.message import Envelope, build_task_envelope
from tests.e2e.worker_harness import broker, load, open_gate, publish_raw, runs, wait_until
from tests.support import WorkerProcess

TASKS = """
@app.task
def pid():
    return os.getpid()

def die(how):
    if how == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)

@app.task(bind=True)
def crash(self, how):
    note(f"ran-{self.request.id}")
    die(how)

@app.task(bind=True, acks_late=True)
def crash_late(self):
    note(f"ran-{self.request.id}")
    die("kill")

@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def crash_once(self):
    note(f"ran-{self.request.id}")
    if not self.request.delivery_info.get("redelivered"):
        die("kill")
    while not gate_open(self.request.id):  # second life: wait for the test to look
        time.sleep(0.01)
    return "second life"

@app.task(bind=True)
def early(self, seconds=30):
    note(f"ran-{self.request.id}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not gate_open(self.request.id):
        time.sleep(0.01)
    return os.getpid()

@app.task(bind=True, acks_late=True)
def long_late(self, seconds):
    note(f"ran-{self.request.id}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not gate_open(self.request.id):
        time.sleep(0.01)
    return [os.getpid(), self.request.hostname, self.request.delivery_info.get("redelivered")]
"""

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_dead_child_fails_its_task_and_is_replaced(
    how: str, project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-c", "1")
    before = wtasks.pid.delay().get(timeout=10)

    doomed = wtasks.crash.delay(how)

    with pytest.raises(WorkerLostError):
        doomed.get(timeout=10)
    assert doomed.state == "FAILURE"
    assert runs(directory, doomed.id) == [str(before)]
    after = wtasks.pid.delay().get(timeout=10)
    assert after != before
    assert worker.process.poll() is None
    assert f"pid {before}" in worker.output  # the log names the process that was lost


def test_late_ack_without_reject_on_worker_lost_is_not_redelivered(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-c", "1")

    doomed = wtasks.crash_late.delay()

    with pytest.raises(WorkerLostError):
        doomed.get(timeout=10)
    assert wtasks.pid.delay().get(timeout=10)  # the worker went on with the next message
    assert len(runs(directory, doomed.id)) == 1  # the lost message was acked, not retried


def test_reject_on_worker_lost_requeues_and_the_task_runs_again(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-c", "1")

    survivor = wtasks.crash_once.delay()

    try:
        wait_until(lambda: len(runs(directory, survivor.id)) == 2, message="redelivery")
        # Requeued, not failed: the caller never sees the loss as the task's outcome.
        assert survivor.state == "PENDING"
    finally:
        open_gate(directory, survivor.id)
    assert survivor.get(timeout=10) == "second life"
    first, second = runs(directory, survivor.id)
    assert first != second  # the second run is in the replacement child


def test_killed_worker_gives_late_acked_message_to_the_next_worker(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    first = start_worker(directory, "wtasks", "-c", "1", "-n", "first@%h")
    held = wtasks.long_late.delay(30)
    wait_until(lambda: runs(directory, held.id), message="task started")
    [child] = runs(directory, held.id)

    os.kill(first.process.pid, signal.SIGKILL)
    os.kill(int(child), signal.SIGKILL)
    first.process.wait(10)
    start_worker(directory, "wtasks", "-c", "1", "-n", "second@%h")

    try:
        wait_until(lambda: len(runs(directory, held.id)) == 2, message="redelivery")
    finally:
        open_gate(directory, held.id)
    pid, hostname, redelivered = held.get(timeout=10)
    assert hostname.startswith("second@")
    assert redelivered is True
    assert str(pid) == runs(directory, held.id)[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_children_die_with_a_killed_worker_so_a_redelivered_task_runs_once(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    first = start_worker(directory, "wtasks", "-c", "2")
    held = wtasks.long_late.delay(30)
    wait_until(lambda: runs(directory, held.id), message="task started")
    [child] = runs(directory, held.id)

    os.kill(first.process.pid, signal.SIGKILL)  # the worker alone: its children are not signalled
    first.process.wait(10)

    wait_until(lambda: not alive(int(child)), timeout=5, message="orphan child gone")
    start_worker(directory, "wtasks", "-c", "1", "-n", "second@%h")
    try:
        wait_until(lambda: len(runs(directory, held.id)) == 2, message="redelivery")
    finally:
        open_gate(directory, held.id)
    assert held.get(timeout=10)[1].startswith("second@")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killed_worker_loses_no_early_ack_message_that_had_not_started(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    # One message reserved at a time: the next is fetched only once the running one is acked.
    first = start_worker(directory, "wtasks", "-c", "1", "--prefetch-multiplier", "1")
    running, *waiting = (wtasks.app.AsyncResult(str(uuid.uuid4())) for _ in range(4))
    publish_raw(
        wtasks,
        *(routed(build_task_envelope("wtasks.early", r.id, [], {})) for r in [running, *waiting]),
    )
    wait_until(lambda: runs(directory, running.id), message="first task started")
    [child] = runs(directory, running.id)
    with broker(wtasks) as transport:
        # The second one waits in the child's queue, not started (so not acked).
        wait_until(lambda: transport.size("celery") == 2, message="the next one fetched")

    os.kill(first.process.pid, signal.SIGKILL)
    os.kill(int(child), signal.SIGKILL)
    first.process.wait(10)
    for result in waiting:
        open_gate(directory, result.id)
    start_worker(directory, "wtasks", "-c", "1")

    assert all(result.get(timeout=10) for result in waiting)  # none of them was lost
    for result in waiting:
        [pid] = runs(directory, result.id)  # ran once, in the new worker
        assert pid != child
    assert runs(directory, running.id) == [child]  # acked when it started: not run again
    assert running.state == "PENDING"


def routed(envelope: Envelope, queue: str = "celery") -> Envelope:
    envelope.routing_key = queue
    return envelope


def test_long_task_in_a_live_worker_is_not_run_twice(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-c", "1", "-n", "first@%h")
    held = wtasks.long_late.delay(2.0)
    wait_until(lambda: runs(directory, held.id), message="task started")

    # A second consumer looks for dead holders about once a second while the task runs.
    start_worker(directory, "wtasks", "-c", "1", "-n", "second@%h")
    pid, hostname, redelivered = held.get(timeout=10)

    assert hostname.startswith("first@")
    assert redelivered is False
    assert runs(directory, held.id) == [str(pid)]
