"""A celeriac client calls a real Celery 5 worker.

Per broker one Celery worker (``celery worker -P prefork -c 2``) serves every test of
this module: Redis with Redis results, RabbitMQ with Redis results, RabbitMQ with
``rpc://`` results. The client is a celeriac app in this process; it sends tasks by name,
expands workflows as Celery does, and reads what the Celery worker stored.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import celeriac
from celeriac import exceptions as celeriac_exceptions
from tests.interop.cases import ARGS, KWARGS, assert_echoed
from tests.interop.support import (
    MAX_PRIORITY,
    REDIS_RESULTS,
    TIMEOUT,
    backend_url,
    broker_url,
    close_celery_app,
    new_queue,
    peer_env,
    start_celeriac_worker,
    start_celery_worker,
)
from tests.support import WorkerProcess

pytest.importorskip("celery")  # the worker's side

pytestmark = [pytest.mark.celery, pytest.mark.redis]

SETUPS = [
    pytest.param(("redis", "redis"), id="redis"),
    pytest.param(("amqp", "redis"), id="amqp", marks=pytest.mark.amqp),
    pytest.param(("amqp", "rpc"), id="amqp-rpc", marks=pytest.mark.amqp),
]


@dataclass
class Setup:
    broker_kind: str
    backend_kind: str
    env: dict[str, str]
    queue: str
    project: Path
    client: celeriac.Celery
    worker: WorkerProcess

    def send(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        return self.client.send_task(name, args, kwargs, **options)

    def sig(self, name: str, *args: Any) -> Any:
        return self.client.signature(name, args)


def celeriac_client(broker: str, backend: str, queue: str) -> celeriac.Celery:
    client = celeriac.Celery("celeriac_client", broker=broker, backend=backend)
    client.conf.update(task_default_queue=queue, task_queue_max_priority=MAX_PRIORITY)
    return client


@pytest.fixture(scope="module", params=SETUPS)
def setup(
    request: pytest.FixtureRequest, interop_redis: object, interop_project: Path
) -> Iterator[Setup]:
    broker_kind, backend_kind = request.param
    broker, backend, queue = (
        broker_url(broker_kind, request),
        backend_url(backend_kind),
        new_queue(),
    )
    env = peer_env(interop_project, broker, backend, queue)
    worker = start_celery_worker(interop_project, env, "-P", "prefork", "-c", "2")
    client = celeriac_client(broker, backend, queue)
    try:
        yield Setup(broker_kind, backend_kind, env, queue, interop_project, client, worker)
    finally:
        client.close()
        worker.stop()


def wait_for_list(notes: redis.Redis, key: str, length: int) -> list[str]:
    """The items of a Redis list once it has ``length`` of them (tasks push them)."""
    deadline = time.monotonic() + TIMEOUT
    while notes.llen(key) < length:
        assert time.monotonic() < deadline, f"{key} has {notes.llen(key)} of {length} items"
        time.sleep(0.02)
    return [item.decode() for item in notes.lrange(key, 0, -1)]


def needs_stored_results(setup: Setup) -> None:
    if setup.backend_kind == "rpc":
        pytest.skip("rpc:// results are messages to one client: chords need a store")


# -- arguments and results --------------------------------------------------------------------


def test_arguments_of_every_type_arrive_and_come_back(setup: Setup) -> None:
    result = setup.send("interop.echo", ARGS, KWARGS)
    assert_echoed(result.get(timeout=TIMEOUT))
    assert result.state == "SUCCESS"


@pytest.mark.parametrize("compression", ["gzip", "bzip2"])
def test_compressed_messages_arrive(setup: Setup, compression: str) -> None:
    result = setup.send("interop.echo", ARGS, KWARGS, compression=compression)
    assert_echoed(result.get(timeout=TIMEOUT))


def test_a_result_is_read_by_celeriac(setup: Setup) -> None:
    result = setup.send("interop.add", (2, 3))
    assert result.get(timeout=TIMEOUT) == 5
    assert result.successful()
    if setup.backend_kind == "redis":  # rpc:// replies carry no date and no details
        assert isinstance(result.date_done, dt.datetime)
        # result_extended: the worker stores what ran, where.
        assert (result.name, result.args, result.kwargs) == ("interop.add", [2, 3], {})
        assert (result.retries, result.queue) == (0, setup.queue)
        assert result.worker.startswith("celery@")


# -- exceptions -------------------------------------------------------------------------------


def test_a_value_error_is_raised_again_by_celeriac(setup: Setup) -> None:
    result = setup.send("interop.fail", ("bad ïnput ✗",))
    with pytest.raises(ValueError) as raised:
        result.get(timeout=TIMEOUT)
    assert type(raised.value) is ValueError
    assert raised.value.args == ("bad ïnput ✗",)
    assert result.state == "FAILURE"
    traceback = result.traceback
    assert traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(message)" in traceback
    assert traceback.rstrip().endswith("ValueError: bad ïnput ✗")


def test_an_application_exception_keeps_its_class_and_arguments(setup: Setup) -> None:
    import interop_errors

    result = setup.send("interop.fail_custom", ("nope", 7))
    with pytest.raises(interop_errors.InteropError) as raised:
        result.get(timeout=TIMEOUT)
    assert raised.value.args == ("nope", 7)
    assert "interop_errors.InteropError: ('nope', 7)" in result.traceback


def test_time_limits_fail_the_task_with_celerys_exceptions(setup: Setup) -> None:
    soft = setup.send("interop.sleep", (5,), soft_time_limit=0.3)
    hard = setup.send("interop.sleep", (5,), time_limit=0.6)
    with pytest.raises(celeriac_exceptions.SoftTimeLimitExceeded):
        soft.get(timeout=TIMEOUT)
    with pytest.raises(celeriac_exceptions.TimeLimitExceeded):
        hard.get(timeout=TIMEOUT)
    assert (soft.state, hard.state) == ("FAILURE", "FAILURE")


# -- callbacks and errbacks -------------------------------------------------------------------


def test_a_callback_gets_the_result(setup: Setup) -> None:
    callback = setup.sig("interop.mul", 10)
    callback_result = callback.freeze()
    result = setup.send("interop.add", (2, 3), link=callback)
    assert result.get(timeout=TIMEOUT) == 5
    assert setup.client.AsyncResult(callback_result.id).get(timeout=TIMEOUT) == 50


def test_errbacks_of_both_styles_are_called(setup: Setup) -> None:
    result = setup.send(
        "interop.fail",
        ("for the errbacks",),
        link_error=[setup.sig("interop.errback"), setup.sig("interop.errback_by_id")],
    )
    with pytest.raises(ValueError):
        result.get(timeout=TIMEOUT)
    with redis.Redis.from_url(REDIS_RESULTS) as notes:
        key = f"errback-{result.id}"
        calls = wait_for_list(notes, key, 2)
    assert sorted(calls) == ["ValueError: for the errbacks", "by id"]


# -- countdown, eta, expiry, retries: sent together, their waits overlap ------------------------


@dataclass
class Delayed:
    countdown_sent_at: float
    countdown: Any
    countdown_state_after_send: str
    eta: dt.datetime
    at_eta: Any
    expired: Any
    retried: Any
    retried_token: str


@pytest.fixture(scope="module")
def delayed(setup: Setup) -> Delayed:
    token = f"retries-{uuid.uuid4().hex}"
    # Expiry first: it must reach the worker while its ETA keeps it waiting.
    expired = setup.send("interop.stamp", countdown=1.5, expires=0.6)
    sent_at = time.time()
    countdown = setup.send("interop.stamp", countdown=1.0)
    eta = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.2)
    at_eta = setup.send("interop.stamp", eta=eta)
    retried = setup.send("interop.retry_twice", (token,))
    state_after_send = countdown.state  # its ETA is a second away
    return Delayed(sent_at, countdown, state_after_send, eta, at_eta, expired, retried, token)


def test_countdown_is_not_run_before_its_time(setup: Setup, delayed: Delayed) -> None:
    assert delayed.countdown_state_after_send == "PENDING"
    assert delayed.countdown.get(timeout=TIMEOUT) >= delayed.countdown_sent_at + 1.0


def test_eta_is_not_run_before_its_time(setup: Setup, delayed: Delayed) -> None:
    assert delayed.at_eta.get(timeout=TIMEOUT) >= delayed.eta.timestamp()


def test_an_expired_task_is_revoked(setup: Setup, delayed: Delayed) -> None:
    with pytest.raises(celeriac_exceptions.TaskRevokedError):
        delayed.expired.get(timeout=TIMEOUT)
    assert delayed.expired.state == "REVOKED"
    setup.worker.wait_for_output(delayed.expired.id)


def test_a_task_retried_twice_succeeds_under_one_id(setup: Setup, delayed: Delayed) -> None:
    assert delayed.retried.get(timeout=TIMEOUT) == {"retries": 2, "token": delayed.retried_token}
    with redis.Redis.from_url(REDIS_RESULTS) as notes:
        runs = [run.decode() for run in notes.lrange(delayed.retried_token, 0, -1)]
    assert runs == [delayed.retried.id] * 3


# -- canvas: celeriac expands the workflow, the Celery worker carries it on ---------------------


def test_a_chain_runs_step_by_step(setup: Setup) -> None:
    workflow = celeriac.chain(
        setup.sig("interop.add", 2, 2), setup.sig("interop.mul", 10), setup.sig("interop.add", 1)
    )
    result = workflow.apply_async()
    assert result.get(timeout=TIMEOUT) == 41
    assert result.parent.get(timeout=TIMEOUT) == 40
    assert result.parent.parent.get(timeout=TIMEOUT) == 4


def test_a_group_collects_its_results_in_order(setup: Setup) -> None:
    result = celeriac.group(setup.sig("interop.add", i, i) for i in range(6)).apply_async()
    assert result.get(timeout=TIMEOUT) == [0, 2, 4, 6, 8, 10]
    assert result.successful()


def test_a_chord_body_gets_the_header_results(setup: Setup) -> None:
    needs_stored_results(setup)
    header = [setup.sig("interop.add", i, i) for i in range(5)]
    result = celeriac.chord(header)(setup.sig("interop.tsum"))
    assert result.get(timeout=TIMEOUT) == 20


def test_a_chord_is_refused_with_rpc_results(setup: Setup) -> None:
    if setup.backend_kind != "rpc":
        pytest.skip("only rpc:// refuses chords")
    # Refused by the client before anything is sent: results go to one client as
    # messages, so no worker could count the header and the body would never run.
    header = [setup.sig("interop.add", i, i) for i in range(2)]
    with pytest.raises(NotImplementedError, match="does not support chords"):
        celeriac.chord(header)(setup.sig("interop.tsum"))
    with pytest.raises(NotImplementedError, match="does not support chords"):
        celeriac.chain(celeriac.group(header), setup.sig("interop.tsum")).apply_async()


def test_a_failing_chain_step_fails_the_chain(setup: Setup) -> None:
    workflow = celeriac.chain(setup.sig("interop.fail", "first step"), setup.sig("interop.add", 1))
    result = workflow.apply_async()
    with pytest.raises(ValueError, match="first step"):
        result.get(timeout=TIMEOUT)


# -- priority ---------------------------------------------------------------------------------

#: (label, priority) in the order sent; neither FIFO nor the reverse of it.
PRIORITY_SENDS = [("a", 5), ("b", 0), ("c", 9), ("d", 2), ("e", 3)]
#: kombu's Redis transport: lists for priority steps 0, 3, 6, 9 (a priority goes to the
#: largest step not above it), read from step 0 up; FIFO within a step.
REDIS_ORDER = ["b", "d", "a", "e", "c"]
#: RabbitMQ (x-max-priority queue): highest priority first.
AMQP_ORDER = ["c", "a", "e", "d", "b"]


def test_priorities_are_honoured_as_celery_maps_them(setup: Setup) -> None:
    if setup.backend_kind == "rpc":
        pytest.skip("the priority order does not depend on the result backend")
    queue, key = new_queue(), f"order-{uuid.uuid4().hex}"
    # Published while no worker consumes the queue, then one worker takes one at a time.
    results = [
        setup.send("interop.record", (key, label), queue=queue, priority=priority)
        for label, priority in PRIORITY_SENDS
    ]
    env = {**setup.env, "INTEROP_QUEUE": queue}
    # prefork with one child: a solo Celery worker on RabbitMQ takes 10 s to stop.
    worker = start_celery_worker(
        setup.project, env, "-P", "prefork", "-c", "1", "--prefetch-multiplier", "1"
    )
    try:
        assert [result.get(timeout=TIMEOUT) for result in results] == ["a", "b", "c", "d", "e"]
    finally:
        worker.stop()
    with redis.Redis.from_url(REDIS_RESULTS) as notes:
        order = [label.decode() for label in notes.lrange(key, 0, -1)]
    assert order == (REDIS_ORDER if setup.broker_kind == "redis" else AMQP_ORDER)


# -- one workflow, both workers: steps routed to a Celery and a celeriac worker -----------------


@dataclass
class BothWorkers:
    celery_queue: str
    celeriac_queue: str
    clients: dict[str, Any]  # "celeriac" and "celery": a client of each library


@pytest.fixture(scope="module")
def both(setup: Setup) -> Iterator[BothWorkers]:
    """A celeriac worker (node ``celeriac@...``) beside the module's Celery worker, on a
    queue of its own, and a Celery client beside the celeriac one."""
    needs_stored_results(setup)
    celery = pytest.importorskip("celery")
    queue = f"{setup.queue}.celeriac"
    env = {**setup.env, "INTEROP_QUEUE": queue}
    worker = start_celeriac_worker(
        setup.project, env, "-P", "prefork", "-c", "2", "-n", "celeriac@%h"
    )
    celery_client = celery.Celery(
        "celery_client", broker=setup.env["INTEROP_BROKER"], backend=setup.env["INTEROP_BACKEND"]
    )
    celery_client.conf.update(task_default_queue=setup.queue, task_queue_max_priority=MAX_PRIORITY)
    try:
        yield BothWorkers(setup.queue, queue, {"celeriac": setup.client, "celery": celery_client})
    finally:
        close_celery_app(celery_client)
        worker.stop()


def ran_on(setup: Setup, task_id: str) -> str:
    """The node that ran a task (result_extended's ``worker``), its name up to the ``@``."""
    result = setup.client.AsyncResult(task_id)
    # Celery sends a chain's next step before it stores the result of this one.
    result.get(timeout=TIMEOUT)
    worker = result.worker
    assert worker is not None
    return worker.split("@")[0]


@pytest.mark.parametrize("client", ["celeriac", "celery"])
def test_a_chord_split_between_both_workers_joins_once(
    setup: Setup, both: BothWorkers, client: str
) -> None:
    app = both.clients[client]
    queues = [both.celery_queue, both.celeriac_queue]
    header = [app.signature("interop.add", (i, i)).set(queue=queues[i % 2]) for i in range(6)]
    # The body on the celeriac worker: counted by both kinds, released by whichever
    # completes the header, run on the other kind half of the time.
    body = app.signature("interop.tsum").set(queue=both.celeriac_queue)
    canvas = celeriac if client == "celeriac" else pytest.importorskip("celery")
    result = canvas.chord(header)(body)
    assert result.get(timeout=TIMEOUT) == 30
    assert ran_on(setup, result.id) == "celeriac"
    members = result.parent.results
    assert [ran_on(setup, member.id) for member in members] == ["celery", "celeriac"] * 3


@pytest.mark.parametrize("client", ["celeriac", "celery"])
def test_a_chain_passes_results_between_both_workers(
    setup: Setup, both: BothWorkers, client: str
) -> None:
    app = both.clients[client]
    canvas = celeriac if client == "celeriac" else pytest.importorskip("celery")
    result = canvas.chain(
        app.signature("interop.add", (2, 2)).set(queue=both.celery_queue),
        app.signature("interop.mul", (10,)).set(queue=both.celeriac_queue),
        app.signature("interop.add", (1,)).set(queue=both.celery_queue),
        app.signature("interop.echo").set(queue=both.celeriac_queue),
    ).apply_async()
    echoed = result.get(timeout=TIMEOUT)
    assert echoed["args"] == [41]
    assert ran_on(setup, result.id) == "celeriac"
    assert ran_on(setup, result.parent.id) == "celery"
