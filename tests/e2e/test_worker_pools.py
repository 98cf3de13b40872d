"""Worker pools end to end: prefork, threads and solo run tasks; ``-c``, ``-Q``, ``-n`` work."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from celeriac.protocol.message import build_task_envelope
from tests.e2e.worker_harness import broker, load, open_gate, publish_raw, take_all
from tests.support import WorkerProcess

TASKS = """
import threading

@app.task
def add(x, y):
    return x + y

@app.task
def where(delay=0.0):
    time.sleep(delay)
    return [os.getpid(), threading.get_ident()]

@app.task(bind=True)
def who(self):
    return self.request.hostname

@app.task(bind=True)
def held(self):
    while not gate_open(self.request.id):
        time.sleep(0.01)
    return "let go"
"""

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_pool_runs_tasks_and_returns_results(
    pool: str, project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-P", pool, "-c", "2", "-n", "alpha@%h")

    results = [wtasks.add.delay(n, n) for n in range(20)]

    assert [result.get(timeout=10) for result in results] == [2 * n for n in range(20)]
    assert all(result.state == "SUCCESS" for result in results)
    pid, _ = wtasks.where.delay().get(timeout=10)
    if pool == "prefork":
        assert pid != worker.process.pid  # ran in a child process
    else:
        assert pid == worker.process.pid  # ran inside the worker process itself
    # -n names the node; tasks see it as their request's hostname.
    assert wtasks.who.delay().get(timeout=10) == f"alpha@{socket.gethostname()}"


def test_prefork_is_the_default_and_concurrency_is_its_number_of_children(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-c", "2")

    # Slow enough that both children must take part: four at once on two processes.
    results = [wtasks.where.delay(0.3) for _ in range(4)]
    pids = {pid for pid, _ in (result.get(timeout=10) for result in results)}

    assert "(prefork)" in worker.output
    assert len(pids) == 2
    assert worker.process.pid not in pids
    assert os.getpid() not in pids


def test_prefork_child_is_replaced_after_max_tasks_per_child(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-c", "1", "--max-tasks-per-child", "3")

    results = wtasks.where.delay_many([()] * 12)
    per_pid = Counter(pid for pid, _ in (result.get(timeout=10) for result in results))

    assert sum(per_pid.values()) == 12
    assert max(per_pid.values()) == 3  # the limit, even when jobs arrive in batches
    assert len(per_pid) == 4


def test_threads_concurrency_is_the_number_of_threads(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    worker = start_worker(directory, "wtasks", "-P", "threads", "-c", "3")

    results = [wtasks.where.delay(0.3) for _ in range(6)]
    ran = [result.get(timeout=10) for result in results]

    assert {pid for pid, _ in ran} == {worker.process.pid}
    assert len({thread for _, thread in ran}) == 3


def test_worker_consumes_only_the_queues_named_by_dash_q(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-P", "solo", "-Q", "alpha,gamma")

    elsewhere = wtasks.add.apply_async((1, 1), queue="beta")
    on_alpha = wtasks.add.apply_async((2, 2), queue="alpha")
    on_gamma = wtasks.add.apply_async((3, 3), queue="gamma")

    assert on_alpha.get(timeout=10) == 4
    assert on_gamma.get(timeout=10) == 6
    # Both were published after the one for beta, so the worker had every chance to take it.
    assert elsewhere.state == "PENDING"
    with broker(wtasks) as transport:
        assert transport.size("beta") == 1
        [left] = take_all(transport, "beta")
        assert left.envelope.headers["id"] == elsewhere.id


def test_quick_result_is_not_held_back_by_a_slow_task_in_the_same_batch(
    project: Project, tmp_path: Path, start_worker: StartWorker
) -> None:
    directory, wtasks = load(project, tmp_path, TASKS)
    start_worker(directory, "wtasks", "-P", "prefork", "-c", "1")
    quick, slow = str(uuid.uuid4()), str(uuid.uuid4())
    envelopes = [
        build_task_envelope("wtasks.add", quick, [1, 2], {}),
        build_task_envelope("wtasks.held", slow, [], {}),
    ]
    for envelope in envelopes:
        envelope.routing_key = "celery"
    # One publish: the worker fetches both at once and hands them to its child together.
    sent = time.monotonic()
    publish_raw(wtasks, *envelopes)
    try:
        assert wtasks.app.AsyncResult(quick).get(timeout=5) == 3
        assert time.monotonic() - sent < 2.0
        assert wtasks.app.AsyncResult(slow).state == "PENDING"  # still running
    finally:
        open_gate(directory, slow)
    assert wtasks.app.AsyncResult(slow).get(timeout=10) == "let go"
