"""Bad input end to end: each bad message gets one clear log line, nothing else is lost.

Every test interleaves good tasks with the bad message and checks that each good one
completes, that the worker is still running, and that the log names the message and why.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from celeriac.exceptions import ContentDisallowed, InvalidMessageError, NotRegistered
from celeriac.protocol.message import Envelope, build_task_envelope
from tests.e2e.worker_harness import broker, log_lines, publish_raw, shared_worker, wait_until
from tests.support import WorkerProcess

TASKS = """
@app.task
def add(x, y):
    return x + y
"""

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]


def good_calls_complete(wtasks: ModuleType, count: int = 3) -> None:
    results = [wtasks.add.delay(n, 1) for n in range(count)]
    assert [result.get(timeout=10) for result in results] == [n + 1 for n in range(count)]


def envelope(name: str, task_id: str, **options: object) -> Envelope:
    built = build_task_envelope(name, task_id, [1, 2], {}, **options)  # type: ignore[arg-type]
    built.routing_key = "celery"
    return built


def assert_worker_survived(worker: WorkerProcess, wtasks: ModuleType) -> None:
    good_calls_complete(wtasks)
    assert worker.process.poll() is None
    assert "Traceback" not in worker.output
    with broker(wtasks) as transport:
        assert transport.size("celery") == 0  # nothing left behind, bad messages included


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkerProcess, ModuleType]]:
    """One worker for the module: each test's messages have their own ids."""
    directory = tmp_path_factory.mktemp("bad-input")
    with shared_worker(directory, TASKS, "-c", "1") as (wtasks, worker):
        yield worker, wtasks


def test_undecodable_body_fails_that_task_alone(started: tuple[WorkerProcess, ModuleType]) -> None:
    worker, wtasks = started
    good_calls_complete(wtasks)
    bad = envelope("wtasks.add", task_id := str(uuid.uuid4()))
    bad.body = b"{not json"
    publish_raw(wtasks, bad)

    wait_until(lambda: log_lines(worker.output, task_id))  # the error line, not INFO's
    [line] = log_lines(worker.output, task_id)
    assert "decode" in line
    assert_worker_survived(worker, wtasks)
    result = wtasks.app.AsyncResult(task_id)
    assert result.state == "FAILURE"


def test_unknown_task_fails_fast_for_the_caller(started: tuple[WorkerProcess, ModuleType]) -> None:
    worker, wtasks = started
    result = wtasks.app.send_task("no.such.task", (1,))
    after = wtasks.add.delay(1, 1)

    with pytest.raises(NotRegistered):
        result.get(timeout=5)
    assert after.get(timeout=10) == 2
    [line] = log_lines(worker.output, result.id)
    assert "no.such.task" in line
    assert "unregistered" in line.lower()
    assert_worker_survived(worker, wtasks)


def test_unaccepted_content_type_is_refused(started: tuple[WorkerProcess, ModuleType]) -> None:
    worker, wtasks = started
    pickled = envelope("wtasks.add", task_id := str(uuid.uuid4()), serializer="pickle")
    assert pickled.content_type == "application/x-python-serialize"
    publish_raw(wtasks, pickled)
    after = wtasks.add.delay(2, 2)

    assert after.get(timeout=10) == 4
    wait_until(lambda: log_lines(worker.output, task_id))  # the error line, not INFO's
    [line] = log_lines(worker.output, task_id)
    assert "application/x-python-serialize" in line
    assert "accept_content" in line
    assert_worker_survived(worker, wtasks)
    with pytest.raises(ContentDisallowed):  # never ran; the caller learns why
        wtasks.app.AsyncResult(task_id).get(timeout=5)


def test_message_without_required_headers_is_discarded(
    started: tuple[WorkerProcess, ModuleType],
) -> None:
    worker, wtasks = started
    headless = envelope("wtasks.add", correlation := str(uuid.uuid4()))
    headless.headers = {"lang": "py"}  # no 'task', no 'id'; the body is a v2 list, not v1
    publish_raw(wtasks, headless)
    after = wtasks.add.delay(3, 3)

    assert after.get(timeout=10) == 6
    wait_until(lambda: log_lines(worker.output, correlation))  # the error line, not INFO's
    [line] = log_lines(worker.output, correlation)
    assert "task" in line
    assert "invalid" in line.lower()
    assert_worker_survived(worker, wtasks)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("expires", "not a date"),
        ("eta", "not a date either"),
        ("timelimit", "soon"),
        ("timelimit", [1]),
        ("task", 123),
        ("task", ["wtasks.add"]),
    ],
)
def test_malformed_header_values_do_not_stop_the_worker(
    header: str, value: object, started: tuple[WorkerProcess, ModuleType]
) -> None:
    worker, wtasks = started
    odd = envelope("wtasks.add", task_id := str(uuid.uuid4()))
    odd.headers[header] = value
    publish_raw(wtasks, odd)
    after = wtasks.add.delay(5, 5)

    assert after.get(timeout=10) == 10
    wait_until(lambda: log_lines(worker.output, task_id))  # the error line, not INFO's
    [line] = log_lines(worker.output, task_id)
    assert header in line
    assert_worker_survived(worker, wtasks)
    if header != "eta":  # an unreadable eta is only a warning: the task runs now
        with pytest.raises(InvalidMessageError, match=header):
            wtasks.app.AsyncResult(task_id).get(timeout=5)


def test_bad_messages_between_good_ones_lose_nothing(
    started: tuple[WorkerProcess, ModuleType],
) -> None:
    worker, wtasks = started
    bad_ids = []
    good = []
    for round_ in range(5):
        good.append(wtasks.add.delay(round_, 10))
        broken = envelope("wtasks.add", str(uuid.uuid4()))
        broken.body = b"\x00garbage"
        bad_ids.append(broken.headers["id"])
        publish_raw(wtasks, broken)
        bad_ids.append(wtasks.app.send_task("no.such.task").id)
        good.append(wtasks.add.delay(round_, 20))

    assert [result.get(timeout=10) for result in good] == [
        value for round_ in range(5) for value in (round_ + 10, round_ + 20)
    ]
    wait_until(lambda: all(log_lines(worker.output, task_id) for task_id in bad_ids))
    for task_id in bad_ids:
        assert len(log_lines(worker.output, task_id)) == 1
        assert wtasks.app.AsyncResult(task_id).state == "FAILURE"
    assert_worker_survived(worker, wtasks)


def test_unknown_transport_scheme_is_one_clear_error(project: Project, tmp_path: Path) -> None:
    directory = project(
        {"badbroker.py": "from celeriac import Celery\napp = Celery(broker='sqlitee:///x')\n"}
    )
    finished = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "badbroker", "worker", "-l", "INFO"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert finished.returncode != 0
    output = finished.stdout + finished.stderr
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "sqlitee" in line]
    assert len(errors) == 1, output
    assert "unknown transport" in errors[0]
