"""Canvas workflows as Celery users write them, run by real worker subprocesses.

One prefork worker (``-c 2``) on the embedded SQLite broker and result store serves most
tests; the chord reliability tests start their own workers, since they kill one and feed
another duplicate messages.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from celeriac import states
from celeriac.canvas import chain, chord, chunks, group, xmap, xstarmap
from celeriac.exceptions import ChordError
from celeriac.result import AsyncResult, GroupResult
from tests.support import WorkerProcess, write_project

TIMEOUT = 20

TASKS = """
import os
import time
from pathlib import Path

from celeriac import Celery, group

HERE = Path(__file__).parent
app = Celery(
    "{name}",
    broker=f"sqlite:///{{HERE}}/broker.db",
    backend={backend},
)


@app.task
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task
def tsum(numbers):
    return sum(numbers)


@app.task
def collect(values):
    return values


@app.task
def echo(*args):
    return list(args)


class Boom(Exception):
    pass


@app.task
def fail(*args):
    raise Boom("boom")


@app.task
def errback_old(failed_id):
    # Old style: sent as a task with the id of the task that failed.
    return f"failed:{{failed_id}}"


@app.task
def errback_new(request, exc, traceback):
    # New style: called inside the worker with the failed task's request.
    Path(HERE, f"errback-{{request.id}}").write_text(f"{{type(exc).__name__}}:{{exc}}")


@app.task(bind=True)
def replaced(self, x):
    raise self.replace(add.s(x, 100))


@app.task(bind=True)
def replaced_by_chain(self, x):
    raise self.replace(add.s(x, 1) | mul.s(10))


@app.task(bind=True)
def replaced_by_group(self, x):
    raise self.replace(group(add.s(x, 1), add.s(x, 2)))


@app.task
def counted_sum(numbers, marker):
    # Appends one line per execution: the reliability tests count them.
    with open(Path(HERE, marker), "a") as log:
        log.write(f"{{os.getpid()}}\\n")
    return sum(numbers)


@app.task
def logged_add(x, y, log):
    with open(Path(HERE, log), "a") as out:
        out.write(f"{{x}}\\n")
    return x + y


@app.task(acks_late=True)
def slow_add(x, y, delay):
    time.sleep(delay)
    return x + y
"""


#: Result backends the workflows run on (the broker is the embedded SQLite one).
BACKENDS = {
    "sqlite": 'f"db+sqlite:///{HERE}/results.db"',
    "redis": '"redis://127.0.0.1:6379/9"',
}
#: Results as messages to the client: no chords (Celery has none there either).
RPC_BACKEND = '"rpc://"'


def _import_project(directory: Path, name: str, backend: str) -> ModuleType:
    source = TASKS.format(name=name, backend=BACKENDS.get(backend, RPC_BACKEND))
    write_project(directory, {f"{name}.py": source})
    sys.path.insert(0, str(directory))
    return importlib.import_module(name)


def _forget_project(directory: Path, module: ModuleType) -> None:
    module.app.close()
    sys.path.remove(str(directory))
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module", params=list(BACKENDS))
def wf(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ModuleType]:
    """The tasks module, with one prefork worker running it."""
    directory = tmp_path_factory.mktemp("workflows")
    module = _import_project(directory, f"wf_tasks_{request.param}", request.param)
    worker = WorkerProcess(directory, module.__name__, ["-P", "prefork", "-c", "2"]).wait_ready()
    module.worker = worker
    yield module
    worker.stop()
    _forget_project(directory, module)


def _wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or condition}")


# -- chains -------------------------------------------------------------------------------


def test_chain_of_three(wf: ModuleType) -> None:
    result = chain(wf.add.s(1, 2), wf.add.s(3), wf.mul.s(10)).apply_async()
    assert result.get(timeout=TIMEOUT) == 60
    assert result.parent.get(timeout=TIMEOUT) == 6
    assert result.parent.parent.get(timeout=TIMEOUT) == 3
    assert result.parent.parent.parent is None


def test_chain_with_pipe_and_immutable_step(wf: ModuleType) -> None:
    result = (wf.add.s(1, 1) | wf.add.si(10, 10) | wf.mul.s(2)).delay()
    assert result.get(timeout=TIMEOUT) == 40
    assert result.parent.get(timeout=TIMEOUT) == 20  # the si step ignored the 2


def test_partial_application_puts_parent_result_first(wf: ModuleType) -> None:
    assert wf.echo.s("b", "c").delay("a").get(timeout=TIMEOUT) == ["a", "b", "c"]
    result = (wf.echo.s("x") | wf.echo.s("y")).delay()
    assert result.get(timeout=TIMEOUT) == [["x"], "y"]


def test_failing_chain_step_fails_the_rest(wf: ModuleType) -> None:
    result = chain(wf.add.s(1, 1), wf.fail.s(), wf.add.s(1)).apply_async()
    with pytest.raises(wf.Boom):
        result.get(timeout=TIMEOUT)
    assert result.state == states.FAILURE  # never ran, but does not stay PENDING
    with pytest.raises(wf.Boom):
        result.parent.get(timeout=TIMEOUT)
    assert result.parent.parent.get(timeout=TIMEOUT) == 2


# -- groups -------------------------------------------------------------------------------


def test_group_of_ten_in_order(wf: ModuleType) -> None:
    result = group(wf.add.s(i, i) for i in range(10)).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [i * 2 for i in range(10)]
    assert result.successful() and result.completed_count() == 10


def test_group_result_save_and_restore(wf: ModuleType) -> None:
    result = group(wf.mul.s(i, 3) for i in range(4)).apply_async()
    result.save()
    restored = GroupResult.restore(result.id, app=wf.app)
    assert restored is not None and restored.id == result.id
    assert [member.id for member in restored] == [member.id for member in result]
    assert restored.get(timeout=TIMEOUT) == [0, 3, 6, 9]


# -- chords -------------------------------------------------------------------------------


def test_chord_body_gets_ordered_results(wf: ModuleType) -> None:
    result = chord((wf.add.s(i, i) for i in range(5)), wf.collect.s()).apply_async()
    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8]
    assert isinstance(result.parent, GroupResult)
    assert result.parent.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8]
    assert chord(wf.add.s(i, 1) for i in range(5))(wf.tsum.s()).get(timeout=TIMEOUT) == 15


def test_chord_with_failing_member(wf: ModuleType) -> None:
    old_id = str(uuid.uuid4())
    body = wf.tsum.s()
    body.link_error(wf.errback_old.s().set(task_id=old_id))
    body.link_error(wf.errback_new.s())
    result = chord([wf.add.s(1, 1), wf.fail.s(), wf.add.s(2, 2)], body).apply_async()
    # As with Celery, get() raises the header's error if it sees it first (it checks parents).
    with pytest.raises((wf.Boom, ChordError)):
        result.get(timeout=TIMEOUT)
    with pytest.raises(ChordError, match="Boom"):
        result.get(timeout=TIMEOUT, follow_parents=False)
    assert result.state == states.FAILURE
    assert AsyncResult(old_id, app=wf.app).get(timeout=TIMEOUT) == f"failed:{result.id}"
    marker = Path(wf.HERE, f"errback-{result.id}")
    _wait_for(marker.exists, what="the new style errback of the chord body")
    assert marker.read_text().startswith("ChordError:")


def test_chord_with_empty_header_runs_body_with_empty_list(wf: ModuleType) -> None:
    result = chord([], wf.collect.s()).apply_async()
    assert result.get(timeout=TIMEOUT) == []


# -- nesting ------------------------------------------------------------------------------


def test_chain_ending_in_group(wf: ModuleType) -> None:
    result = chain(wf.add.s(1, 1), group(wf.mul.s(10), wf.mul.s(100))).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get(timeout=TIMEOUT) == [20, 200]


def test_group_of_chains(wf: ModuleType) -> None:
    result = group(chain(wf.add.s(i, i), wf.mul.s(10)) for i in range(4)).apply_async()
    assert result.get(timeout=TIMEOUT) == [0, 20, 40, 60]


def test_chain_with_group_then_task_becomes_chord(wf: ModuleType) -> None:
    workflow = wf.add.s(1, 1) | group(wf.mul.s(2), wf.mul.s(3)) | wf.tsum.s()
    result = workflow.delay()
    assert result.get(timeout=TIMEOUT) == 10  # 2*2 + 2*3
    assert result.parent.get(timeout=TIMEOUT) == [4, 6]


def test_chord_inside_chain_followed_by_step(wf: ModuleType) -> None:
    workflow = chain(
        wf.add.s(1, 2),
        chord([wf.mul.s(2), wf.mul.s(3)], wf.tsum.s()),
        wf.mul.s(10),
    )
    assert workflow.apply_async().get(timeout=TIMEOUT) == 150  # (3*2 + 3*3) * 10


def test_chord_with_chains_in_header(wf: ModuleType) -> None:
    header = [chain(wf.add.s(i, i), wf.mul.s(10)) for i in range(3)]
    assert chord(header, wf.collect.s()).apply_async().get(timeout=TIMEOUT) == [0, 20, 40]


def test_nested_chords(wf: ModuleType) -> None:
    inner = chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.tsum.s())
    outer = chord([inner, wf.add.s(10, 10)], wf.collect.s())
    assert outer.apply_async().get(timeout=TIMEOUT) == [6, 20]
    both = group(chord([wf.add.s(i, i)], wf.collect.s()) for i in range(3)).apply_async()
    assert both.get(timeout=TIMEOUT) == [[0], [2], [4]]
    two_in_a_row = chain(
        chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.tsum.s()),  # 6
        chord([wf.add.s(1), wf.mul.s(2)], wf.collect.s()),  # [7, 12]
    )
    assert two_in_a_row.apply_async().get(timeout=TIMEOUT) == [7, 12]
    with_chain_body = chord([wf.add.s(1, 1), wf.add.s(2, 2)], wf.tsum.s() | wf.mul.s(10))
    assert with_chain_body.apply_async().get(timeout=TIMEOUT) == 60


def test_failure_early_in_header_chain_fails_the_chord(wf: ModuleType) -> None:
    header = [chain(wf.fail.s(), wf.add.s(1)), wf.add.s(1, 1)]
    result = chord(header, wf.collect.s()).apply_async()
    with pytest.raises(ChordError, match="Boom"):
        result.get(timeout=TIMEOUT, follow_parents=False)


def test_group_followed_by_group(wf: ModuleType) -> None:
    result = (group(wf.add.s(1, 1), wf.add.s(2, 2)) | group(wf.echo.s(), wf.echo.s("x"))).delay()
    assert result.get(timeout=TIMEOUT) == [[[2, 4]], [[2, 4], "x"]]


# -- callbacks and errbacks ---------------------------------------------------------------


def test_link_with_several_callbacks(wf: ModuleType) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    callbacks = [
        wf.mul.s(10).set(task_id=ids[0]),
        wf.add.s(5).set(task_id=ids[1]),
        wf.add.si(0, 0).set(task_id=ids[2]),
    ]
    result = wf.add.apply_async((1, 1), link=callbacks)
    assert result.get(timeout=TIMEOUT) == 2
    values = [AsyncResult(task_id, app=wf.app).get(timeout=TIMEOUT) for task_id in ids]
    assert values == [20, 7, 0]


def test_link_error_old_and_new_style(wf: ModuleType) -> None:
    old_id = str(uuid.uuid4())
    result = wf.fail.apply_async(
        link_error=[wf.errback_old.s().set(task_id=old_id), wf.errback_new.s()]
    )
    with pytest.raises(wf.Boom):
        result.get(timeout=TIMEOUT)
    assert AsyncResult(old_id, app=wf.app).get(timeout=TIMEOUT) == f"failed:{result.id}"
    marker = Path(wf.HERE, f"errback-{result.id}")
    _wait_for(marker.exists, what="the new style errback")
    assert marker.read_text() == "Boom:boom"


def test_link_error_on_chain_reaches_the_failing_step(wf: ModuleType) -> None:
    workflow = chain(wf.add.s(1, 1), wf.fail.s(), wf.add.s(1))
    workflow.link_error(wf.errback_new.s())
    result = workflow.apply_async()
    failing = result.parent
    with pytest.raises(wf.Boom):
        failing.get(timeout=TIMEOUT)
    _wait_for(Path(wf.HERE, f"errback-{failing.id}").exists, what="the chain's errback")


# -- replace, maps, chunks ----------------------------------------------------------------


def test_task_replace(wf: ModuleType) -> None:
    result = wf.replaced.delay(1)
    assert result.get(timeout=TIMEOUT) == 101
    assert (wf.replaced.s(1) | wf.mul.s(2)).delay().get(timeout=TIMEOUT) == 202
    in_chain = (wf.replaced_by_chain.s(1) | wf.add.s(5)).delay()
    assert in_chain.get(timeout=TIMEOUT) == 25  # (1 + 1) * 10 + 5
    in_chord = chord([wf.replaced.s(1), wf.replaced_by_chain.s(2)], wf.collect.s()).delay()
    assert in_chord.get(timeout=TIMEOUT) == [101, 30]
    assert wf.replaced_by_group.delay(1).get(timeout=TIMEOUT) == [2, 3]
    by_group_in_chain = (wf.replaced_by_group.s(1) | wf.tsum.s()).delay()
    assert by_group_in_chain.get(timeout=TIMEOUT) == 5


def test_map_starmap_and_chunks(wf: ModuleType) -> None:
    assert xmap(wf.tsum.s(), [[1, 2], [3, 4]]).delay().get(timeout=TIMEOUT) == [3, 7]
    assert wf.tsum.map([[1], [2, 3]]).delay().get(timeout=TIMEOUT) == [1, 5]
    assert xstarmap(wf.add.s(), [(1, 2), (3, 4)]).delay().get(timeout=TIMEOUT) == [3, 7]
    assert wf.add.starmap([(5, 5)]).delay().get(timeout=TIMEOUT) == [10]
    pairs = list(zip(range(7), range(7), strict=True))
    result = chunks(wf.add.s(), pairs, 3).apply_async()
    assert isinstance(result, GroupResult) and len(result) == 3
    assert result.get(timeout=TIMEOUT) == [[0, 2, 4], [6, 8, 10], [12]]
    assert wf.add.chunks(pairs, 4).delay().get(timeout=TIMEOUT) == [[0, 2, 4, 6], [8, 10, 12]]
    summed = chord(wf.add.chunks(pairs, 4).group(), wf.collect.s()).delay()
    assert summed.get(timeout=TIMEOUT) == [[0, 2, 4, 6], [8, 10, 12]]


# -- chord reliability --------------------------------------------------------------------


@pytest.fixture(params=list(BACKENDS))
def own_project(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    module = _import_project(tmp_path, f"wf_own_{uuid.uuid4().hex[:8]}", request.param)
    yield module
    _forget_project(tmp_path, module)


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_duplicate_header_delivery_runs_body_once(
    own_project: ModuleType, start_worker: Callable[..., WorkerProcess]
) -> None:
    wf = own_project
    marker, log = "body-runs", "member-runs"
    header = [wf.logged_add.s(i, 1, log) for i in range(4)]
    result = chord(header, wf.counted_sum.s(marker)).delay()
    member_runs = Path(wf.HERE, log)
    # Before any worker runs: take the header messages and publish the first one twice.
    transport = wf.app.create_transport()
    try:
        deliveries = transport.fetch(["celery"], 10, 1.0)
        assert len(deliveries) == 4
        envelopes = [delivery.envelope for delivery in deliveries]
        transport.publish([envelopes[0], *envelopes])
        transport.ack(deliveries)
        worker = start_worker(Path(wf.HERE), wf.__name__, "-P", "prefork", "-c", "2")
        assert result.get(timeout=TIMEOUT) == 10  # 1 + 2 + 3 + 4, not 11
        _wait_for(lambda: _lines(member_runs) == 5, what="the duplicate to run")
        # Once the chord is done, another duplicate of a member comes in.
        transport.publish([envelopes[3]])
        _wait_for(lambda: _lines(member_runs) == 6, what="the late duplicate to run")
        worker.stop()
        assert transport.size("celery") == 0  # no second body is waiting either
    finally:
        transport.close()
    assert _lines(Path(wf.HERE, marker)) == 1


def test_chord_completes_once_after_worker_killed_mid_header(
    own_project: ModuleType, start_worker: Callable[..., WorkerProcess]
) -> None:
    wf = own_project
    marker = "body-runs"
    size = 8
    header = [wf.slow_add.s(i, 1, 0.3) for i in range(size)]
    result = chord(header, wf.counted_sum.s(marker)).delay()
    first = start_worker(Path(wf.HERE), wf.__name__, "-P", "prefork", "-c", "2")
    members = result.parent
    _wait_for(lambda: members.completed_count() >= 2, what="two header members to finish")
    assert members.completed_count() < size
    # The whole worker dies at once (as when its machine fails): parent and pool children.
    # The parent goes first, so that it cannot replace the children killed after it.
    children = _children(first.process.pid)
    for pid in [first.process.pid, *children]:
        os.kill(pid, signal.SIGKILL)
    first.process.wait()
    start_worker(Path(wf.HERE), wf.__name__, "-P", "prefork", "-c", "2")
    assert result.get(timeout=TIMEOUT) == sum(range(1, size + 1))
    assert members.get(timeout=TIMEOUT) == list(range(1, size + 1))
    assert _lines(Path(wf.HERE, marker)) == 1


def test_chain_and_group_with_rpc_results(
    tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    wf = _import_project(tmp_path, f"wf_rpc_{uuid.uuid4().hex[:8]}", "rpc")
    try:
        start_worker(tmp_path, wf.__name__, "-P", "prefork", "-c", "2")
        # Later steps are sent by the worker: their results still come back to this client.
        result = chain(wf.add.s(1, 2), wf.add.s(3), wf.mul.s(10)).apply_async()
        assert result.get(timeout=TIMEOUT) == 60
        assert group(wf.add.s(i, i) for i in range(4)).delay().get(timeout=TIMEOUT) == [0, 2, 4, 6]
    finally:
        _forget_project(tmp_path, wf)
