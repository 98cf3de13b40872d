"""Task features end to end in a real worker: retries, ETA, expiry, time limits, result
options, states, simple callbacks and ``async def`` tasks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from celeriac.exceptions import (
    MaxRetriesExceededError,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from tests.e2e.worker_harness import open_gate, runs, shared_worker, wait_until
from tests.support import WorkerProcess

TASKS = """
@app.task(bind=True)
def ran_at(self):
    note(f"ran-{self.request.id}")
    return time.time()

@app.task(bind=True, max_retries=3)
def flaky(self, succeed_on):
    note(f"ran-{self.request.id}")
    if self.request.retries < succeed_on:
        raise self.retry(countdown=0.1)
    return self.request.retries

@app.task(bind=True, autoretry_for=(ValueError,), retry_backoff=False, max_retries=2,
          default_retry_delay=0.05)
def auto(self, succeed_on):
    note(f"ran-{self.request.id}")
    if self.request.retries < succeed_on:
        raise ValueError(f"attempt {self.request.retries}")
    return self.request.retries

@app.task(bind=True, soft_time_limit=0.2)
def soft_caught(self):
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        return "caught"
    return "not interrupted"

@app.task(soft_time_limit=0.2)
def soft_uncaught():
    time.sleep(5)

@app.task(bind=True, time_limit=0.5)
def hard_limited(self):
    note(f"ran-{self.request.id}")
    time.sleep(10)

@app.task
def pid():
    return os.getpid()

@app.task(bind=True, ignore_result=True)
def ignored(self):
    note(f"ran-{self.request.id}")
    return "nobody reads this"

@app.task(bind=True, track_started=True)
def tracked(self):
    while not gate_open(self.request.id):
        time.sleep(0.01)
    return "tracked"

@app.task(bind=True)
def progress(self):
    self.update_state(state="PROGRESS", meta={"done": 1, "of": 2})
    while not gate_open(self.request.id):
        time.sleep(0.01)
    return "finished"

@app.task
def add(x, y):
    return x + y

@app.task
def fail(message):
    raise KeyError(message)

@app.task
def record(value, label):
    note(f"record-{label}", repr(value))

@app.task
def unserializable():
    return object()

@app.task
async def coroutine(x):
    await asyncio.sleep(0.01)
    return x * 2
"""

Setup = tuple[Path, ModuleType, WorkerProcess]


@pytest.fixture(scope="module", params=["prefork", "threads", "solo"])
def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    """One worker per pool for the whole module: every test uses its own task ids."""
    directory = tmp_path_factory.mktemp(f"tasks-{request.param}")
    with shared_worker(directory, TASKS, "-P", request.param, "-c", "2") as (wtasks, worker):
        yield directory, wtasks, worker


def pool_of(setup: Setup) -> str:
    return setup[0].name.split("-")[1].rstrip("0123456789")


def only_in(setup: Setup, *pools: str) -> None:
    pool = pool_of(setup)
    if pool not in pools:
        pytest.skip(f"not with the {pool} pool")


def test_retry_with_countdown_runs_again_until_success(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.flaky.delay(2)

    assert result.get(timeout=10) == 2
    assert len(runs(directory, result.id)) == 3


def test_retry_beyond_max_retries_fails(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.flaky.delay(10)

    with pytest.raises(MaxRetriesExceededError):
        result.get(timeout=10)
    assert len(runs(directory, result.id)) == 4  # the first run and max_retries=3 retries


def test_autoretry_for_retries_then_succeeds(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.auto.delay(2)

    assert result.get(timeout=10) == 2
    assert len(runs(directory, result.id)) == 3


def test_autoretry_for_gives_up_with_the_original_error(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.auto.delay(10)

    with pytest.raises(ValueError, match="attempt 2"):
        result.get(timeout=10)
    assert len(runs(directory, result.id)) == 3


def test_countdown_and_eta_are_not_run_early(setup: Setup) -> None:
    _, wtasks, _ = setup
    sent = time.time()
    by_countdown = wtasks.ran_at.apply_async(countdown=0.6)
    by_eta = wtasks.ran_at.apply_async(eta=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.8))
    right_away = wtasks.ran_at.delay()

    assert right_away.get(timeout=10) - sent < 0.5  # the held ones do not block the others
    assert by_countdown.get(timeout=10) - sent >= 0.6
    assert by_eta.get(timeout=10) - sent >= 0.8


def test_expired_task_is_revoked_not_run(setup: Setup) -> None:
    directory, wtasks, _ = setup
    past = wtasks.ran_at.apply_async(expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    # Expires while it waits for its ETA.
    while_held = wtasks.ran_at.apply_async(countdown=0.5, expires=0.2)
    after = wtasks.ran_at.delay()

    assert after.get(timeout=10)
    for result in (past, while_held):
        with pytest.raises(TaskRevokedError):
            result.get(timeout=10)
        assert result.state == "REVOKED"
        assert runs(directory, result.id) == []


def test_soft_time_limit_is_raised_inside_the_task(setup: Setup) -> None:
    only_in(setup, "prefork", "solo")  # a signal interrupts the task: main threads only
    _, wtasks, _ = setup
    caught = wtasks.soft_caught.delay()
    uncaught = wtasks.soft_uncaught.delay()

    assert caught.get(timeout=10) == "caught"
    with pytest.raises(SoftTimeLimitExceeded):
        uncaught.get(timeout=10)


def test_soft_time_limit_from_apply_async_options(setup: Setup) -> None:
    only_in(setup, "prefork", "solo")
    _, wtasks, _ = setup
    result = wtasks.soft_uncaught.apply_async(soft_time_limit=0.1)
    started = time.monotonic()

    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=10)
    assert time.monotonic() - started < 1.0  # the option, not the task's own 0.2 s


def test_hard_time_limit_kills_and_replaces_the_child(setup: Setup) -> None:
    only_in(setup, "prefork")  # only a child process can be killed
    directory, wtasks, worker = setup
    result = wtasks.hard_limited.delay()
    started = time.monotonic()

    with pytest.raises(TimeLimitExceeded):
        result.get(timeout=10)
    assert time.monotonic() - started < 3.0
    [killed] = runs(directory, result.id)
    pids = {wtasks.pid.delay().get(timeout=10) for _ in range(4)}
    assert killed not in {str(pid) for pid in pids}
    assert "Hard time limit" in worker.output
    assert worker.process.poll() is None


def test_ignore_result_stores_nothing(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.ignored.delay()
    wait_until(lambda: runs(directory, result.id), message="ignored task ran")
    # A task sent after it has completed, on the same worker, with results stored in order.
    assert wtasks.add.delay(1, 1).get(timeout=10) == 2

    assert result.state == "PENDING"
    assert wtasks.app.backend.get([result.id]) == [None]


def test_track_started_shows_started_while_running(setup: Setup) -> None:
    directory, wtasks, worker = setup
    result = wtasks.tracked.delay()
    try:
        wait_until(lambda: result.state == "STARTED", message="STARTED state")
        in_worker_process = result.info["pid"] == worker.process.pid
        assert in_worker_process is (pool_of(setup) != "prefork")
        assert result.info["hostname"].startswith("celery@")
    finally:
        open_gate(directory, result.id)
    assert result.get(timeout=10) == "tracked"


def test_update_state_custom_state_is_visible(setup: Setup) -> None:
    directory, wtasks, _ = setup
    result = wtasks.progress.delay()
    try:
        wait_until(lambda: result.state == "PROGRESS", message="PROGRESS state")
        assert result.info == {"done": 1, "of": 2}
    finally:
        open_gate(directory, result.id)
    assert result.get(timeout=10) == "finished"
    assert result.state == "SUCCESS"


def test_link_and_link_error_callbacks(setup: Setup) -> None:
    directory, wtasks, _ = setup
    ok = wtasks.add.apply_async((1, 2), link=wtasks.record.s("ok"))
    bad = wtasks.fail.apply_async(("boom",), link_error=wtasks.record.s("err"))

    assert ok.get(timeout=10) == 3
    with pytest.raises(KeyError):
        bad.get(timeout=10)
    # The file exists before its line is written: wait for the line.
    ran = wait_until(lambda: written(directory / "record-ok"), message="link ran")
    failed = wait_until(lambda: written(directory / "record-err"), message="link_error ran")
    assert (ran, failed) == (["3"], [repr(bad.id)])


def written(path: Path) -> list[str]:
    """The lines of a task's note, once there are any."""
    return path.read_text().split() if path.exists() else []


def test_async_def_task_runs(setup: Setup) -> None:
    _, wtasks, _ = setup
    results = [wtasks.coroutine.delay(n) for n in range(5)]

    assert [result.get(timeout=10) for result in results] == [0, 2, 4, 6, 8]


def test_result_that_cannot_be_serialized_fails_that_task_alone(setup: Setup) -> None:
    _, wtasks, worker = setup
    before = wtasks.add.delay(1, 1)
    odd = wtasks.unserializable.delay()
    after = wtasks.add.delay(2, 2)

    with pytest.raises(TypeError, match="cannot be serialized"):
        odd.get(timeout=10)
    assert (before.get(timeout=10), after.get(timeout=10)) == (2, 4)
    assert wtasks.add.delay(3, 3).get(timeout=10) == 6  # the pool still has its capacity
    assert worker.process.poll() is None
