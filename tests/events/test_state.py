"""The cluster state fed with events: workers' liveness, tasks' states, bounds."""

from __future__ import annotations

import logging
import time

import pytest

from celeriac.events import State, standard


def stamped(event: dict[str, object], hostname: str = "w1@h", **fields: object) -> dict:
    now = time.time()
    return {"hostname": hostname, "timestamp": now, "local_received": now, **event, **fields}


def heartbeat(hostname: str = "w1@h", **fields: object) -> dict:
    return stamped(standard.worker_heartbeat(freq=2.0, active=1, processed=3), hostname, **fields)


def test_a_worker_is_alive_until_twice_its_heartbeat_interval_passes() -> None:
    state = State()
    worker = state.event(heartbeat(pid=42, clock=7))
    assert worker is state.workers["w1@h"]
    assert worker.alive and (worker.pid, worker.freq, worker.active, worker.processed) == (
        42,
        2.0,
        1,
        3,
    )
    assert worker.sw_ident == "py-celeriac" and worker.clock == 7

    state.event(heartbeat(local_received=time.time() - 3.9))
    assert worker.alive
    state.event(heartbeat(local_received=time.time() - 4.1))
    assert not worker.alive and state.alive_workers() == []


def test_a_worker_that_goes_offline_is_not_alive() -> None:
    state = State()
    state.event(stamped(standard.worker_online(freq=2.0, active=0, processed=0)))
    assert [worker.hostname for worker in state.alive_workers()] == ["w1@h"]
    state.event(stamped(standard.worker_offline(freq=2.0, active=0, processed=9)))
    assert not state.workers["w1@h"].alive
    assert state.workers["w1@h"].processed == 9
    unknown = stamped(standard.worker_offline(freq=2.0, active=0, processed=0), "x@h")
    assert state.event(unknown) is None
    assert "x@h" not in state.workers


def test_task_events_make_a_tasks_story() -> None:
    state = State()
    sent = standard.task_sent("t", "add", args="(1,)", kwargs="{}", queue="q")
    state.event(stamped(sent, "client@h"))
    task = state.tasks["t"]
    assert (task.state, task.client, task.queue, task.worker) == ("PENDING", "client@h", "q", None)
    state.event(stamped(standard.task_received("t", "add", args="(1,)", kwargs="{}", retries=0)))
    state.event(stamped(standard.task_started("t")))
    assert task.state == "STARTED" and task.worker == "w1@h"
    state.event(stamped(standard.task_succeeded("t", "2", 0.5)))
    assert (task.state, task.result, task.runtime, task.name, task.args) == (
        "SUCCESS",
        "2",
        0.5,
        "add",
        "(1,)",
    )
    assert task.ready and None not in (task.sent, task.received, task.started, task.succeeded)
    assert state.task_count == 1 and state.event_count == 4
    assert state.workers["w1@h"].alive  # a worker's task events are signs of life


def test_late_events_add_details_but_not_their_state() -> None:
    state = State()
    state.event(stamped(standard.task_succeeded("t", "2", 0.5)))
    state.event(stamped(standard.task_received("t", "add", args="(1,)", kwargs="{}")))
    task = state.tasks["t"]
    assert (task.state, task.name, task.args, task.result) == ("SUCCESS", "add", "(1,)", "2")


def test_retries_and_custom_states() -> None:
    state = State()
    state.event(stamped(standard.task_started("t")))
    state.event(stamped(standard.task_retried("t", ValueError("again"), "tb")))
    task = state.tasks["t"]
    assert (task.state, task.exception) == ("RETRY", "ValueError('again')")
    state.event(stamped(standard.task_started("t")))
    assert task.state == "STARTED"
    state.event(stamped({"type": "task-progress", "uuid": "t"}))
    assert task.state == "PROGRESS"
    state.event(stamped(standard.task_failed("t", KeyError("k"), "Traceback...")))
    assert (task.state, task.traceback) == ("FAILURE", "Traceback...")


def test_the_state_keeps_the_most_recently_updated() -> None:
    state = State(max_workers=2, max_tasks=3)
    for index in range(4):
        state.event(stamped(standard.task_started(f"t{index}")))
    assert list(state.tasks) == ["t1", "t2", "t3"]
    state.event(stamped(standard.task_succeeded("t1", "1", 0.1)))
    state.event(stamped(standard.task_started("t4")))
    assert list(state.tasks) == ["t3", "t1", "t4"]
    for name in ("a@h", "b@h", "c@h"):
        state.event(heartbeat(name))
    assert list(state.workers) == ["b@h", "c@h"]
    with pytest.raises(ValueError):
        State(max_tasks=0)


def test_wrong_values_are_ignored_not_raised() -> None:
    state = State()
    assert state.event({"no": "type"}) is None
    assert state.event({"type": "task-started"}) is None  # no uuid
    assert state.event({"type": "worker-heartbeat"}) is None  # no hostname
    assert state.event({"type": "custom-thing"}) is None
    task = state.event(
        {"type": "task-succeeded", "uuid": "t", "runtime": "fast", "retries": True, "result": [1]}
    )
    assert (task.state, task.runtime, task.retries, task.result) == ("SUCCESS", None, None, "[1]")
    worker = state.event(heartbeat(freq="often", loadavg=["high"], pid=None))
    assert worker.freq == 60.0 and worker.loadavg is None
    assert state.event_count == 6


def test_clock_drift_is_logged_once_per_worker(caplog: pytest.LogCaptureFixture) -> None:
    state = State()
    with caplog.at_level(logging.WARNING, logger="celeriac.events"):
        for _ in range(3):
            state.event(heartbeat(timestamp=time.time() - 60))
    assert len(caplog.records) == 1
    assert "w1@h" in caplog.records[0].getMessage()
