"""Messages that cannot be processed end alone: dead-lettered, one log line, the worker goes on.

Against a real worker on the embedded broker and on Redis: each bad message is moved to
``<queue>.dead`` with the reason, gets a FAILURE result where it has a task id, is named
in exactly one log line, and the next good task runs. A task that kills its own process
under ``reject_on_worker_lost`` is delivered ``worker_max_deliveries`` times, then
dead-lettered: never an endless loop.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from celeriac.exceptions import InvalidMessageError
from celeriac.protocol.message import Envelope, build_task_envelope
from celeriac.transports.base import DEAD_REASON_HEADER
from celeriac.transports.redis import envelope as envelope_codec
from tests.conformance.transport_amqp import BROKER as AMQP
from tests.conformance.transport_amqp import create_vhost, delete_vhost
from tests.e2e.worker_harness import (
    broker,
    log_lines,
    publish_raw,
    runs,
    shared_worker,
    take_all,
    wait_until,
)
from tests.support import WorkerProcess

TASKS = """
@app.task
def add(x, y):
    return x + y


@app.task(acks_late=True, reject_on_worker_lost=True)
def suicide():
    note(f"ran-{suicide.request.id}")
    os.kill(os.getpid(), signal.SIGKILL)
"""

REDIS = "redis://127.0.0.1:6379/5"


def _nested(depth: int) -> object:
    value: object = {}
    for _ in range(depth):
        value = {"x": value}
    return value


BROKERS = {
    "sqlite": {},
    "redis": {"broker": REDIS, "backend": REDIS},
}

Setup = tuple[WorkerProcess, ModuleType, Path]


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=[pytest.mark.amqp, pytest.mark.redis]),
    ],
)
def started(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    urls = dict(BROKERS.get(request.param, {}))
    vhost = None
    if request.param == "amqp":  # results in Redis
        vhost = create_vhost("dead")
        urls = {"broker": f"{AMQP}/{vhost}", "backend": REDIS}
    if request.param != "sqlite":
        flush_redis()
    directory = tmp_path_factory.mktemp(f"dead-{request.param}")
    try:
        with shared_worker(directory, TASKS, "-c", "1", **urls) as (module, worker):
            yield worker, module, directory
    finally:
        if vhost is not None:
            delete_vhost(vhost)
        if request.param != "sqlite":
            flush_redis()


def flush_redis() -> None:
    import redis

    with redis.Redis.from_url(REDIS) as client:
        client.flushdb()


def envelope(task_id: str, **options: object) -> Envelope:
    built = build_task_envelope("wtasks.add", task_id, [1, 2], {}, **options)  # type: ignore[arg-type]
    built.routing_key = "celery"
    return built


def dead_letter(module: ModuleType, key: str) -> Envelope:
    """The dead-lettered copy whose id (or correlation id) is ``key``; the rest stay there."""

    def find() -> Envelope | None:
        with broker(module) as transport:
            taken = take_all(transport, "celery.dead")
            found = [
                delivery
                for delivery in taken
                if key
                in (
                    delivery.envelope.headers.get("id"),
                    delivery.envelope.properties.get("correlation_id"),
                )
            ]
            transport.ack(found)
            transport.reject([d for d in taken if d not in found], requeue=True)
            return found[0].envelope if found else None

    found: Envelope = wait_until(find, message=f"{key} in celery.dead")
    return found


def good_task_runs(module: ModuleType, worker: WorkerProcess) -> None:
    assert module.add.delay(20, 22).get(timeout=10) == 42
    assert worker.process.poll() is None
    assert "Traceback" not in worker.output


@pytest.mark.parametrize(
    "embed",
    [{"callbacks": 5}, {"callbacks": ["x"]}, {"chain": "x"}, {"chord": 7}],
    ids=["callbacks-int", "callbacks-str", "chain-str", "chord-int"],
)
def test_a_malformed_workflow_is_dead_lettered(embed: dict[str, object], started: Setup) -> None:
    worker, module, _ = started
    bad = envelope(task_id := str(uuid.uuid4()))
    bad.body = orjson.dumps([["x"], {}, embed])
    publish_raw(module, bad)

    copy = dead_letter(module, task_id)
    assert "InvalidMessageError" in copy.headers[DEAD_REASON_HEADER]
    assert copy.body == bad.body  # as it came
    with pytest.raises(InvalidMessageError):
        module.app.AsyncResult(task_id).get(timeout=5)
    assert len(log_lines(worker.output, task_id)) == 1
    good_task_runs(module, worker)


def test_a_decompression_bomb_stops_at_the_cap(started: Setup) -> None:
    worker, module, _ = started
    bomb = envelope(task_id := str(uuid.uuid4()))
    bomb.body = zlib.compress(b"[" + b" " * (80 * 1024 * 1024) + b"]")  # 80 MiB from ~80 KB
    bomb.headers["compression"] = "application/x-gzip"
    publish_raw(module, bomb)

    copy = dead_letter(module, task_id)
    assert "DecodeError" in copy.headers[DEAD_REASON_HEADER]
    [line] = log_lines(worker.output, task_id)
    assert "decompress" in line
    good_task_runs(module, worker)


def test_an_unaccepted_content_type_is_dead_lettered(started: Setup) -> None:
    worker, module, _ = started
    pickled = envelope(task_id := str(uuid.uuid4()), serializer="pickle")
    publish_raw(module, pickled)

    copy = dead_letter(module, task_id)
    assert "ContentDisallowed" in copy.headers[DEAD_REASON_HEADER]
    assert copy.content_type == "application/x-python-serialize"
    [line] = log_lines(worker.output, task_id)
    assert "accept_content" in line
    good_task_runs(module, worker)


def test_a_task_that_kills_its_process_stops_after_max_deliveries(started: Setup) -> None:
    worker, module, directory = started
    result = module.suicide.delay()

    copy = dead_letter(module, result.id)
    assert "died 5 times" in copy.headers[DEAD_REASON_HEADER]
    assert len(runs(directory, result.id)) == 5  # worker_max_deliveries, then no more
    assert result.state == "FAILURE"
    [line] = log_lines(worker.output, result.id, "Dead-lettered")
    assert "worker_max_deliveries" in line
    good_task_runs(module, worker)


# -- Redis entries that are not messages at all --------------------------------------------

POISON = {
    "deep-document": b"[" * 100_000 + b"]" * 100_000,
    "deep-header": b'{"body": "", "headers": {"x": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b'}, "properties": {}}',
    "empty-object": b"{}",
    "no-properties": b'{"hello": "world"}',
    "not-json": b"\xff\xfe garbage",
}


@pytest.mark.redis
@pytest.mark.parametrize("entry", sorted(POISON))
def test_a_redis_entry_that_is_no_message_is_moved_as_it_is(entry: str, started: Setup) -> None:
    worker, module, _ = started
    if not module.app.broker_url.startswith("redis"):
        pytest.skip("raw list entries are Redis's")
    import redis

    raw = POISON[entry]
    before = worker.output.count("Dead-lettered")
    with redis.Redis.from_url(REDIS) as client:
        client.delete("celery.dead")
        client.lpush("celery", raw)
        good_task_runs(module, worker)
        wait_until(lambda: client.llen("celery.dead") == 1, message="the entry in celery.dead")
        [dead] = client.lrange("celery.dead", 0, -1)
    # Moved as it came, or (read as a bare body by the envelope decoder) wrapped intact.
    assert dead == raw or envelope_codec.decode(dead)[0].body == raw
    assert worker.process.poll() is None
    assert worker.output.count("Dead-lettered") == before + 1  # one line, no other


# -- AMQP properties that do not decode ---------------------------------------------------


@pytest.mark.amqp
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"deep": _nested(300)}, id="table-nested-300-deep"),
        pytest.param({"id": "x", "task": "wtasks.add", "deep": [_nested(300)]}, id="in-array"),
    ],
)
def test_amqp_properties_that_do_not_decode_move_the_message(
    headers: dict[str, object], started: Setup
) -> None:
    worker, module, _ = started
    if not module.app.broker_url.startswith("amqp"):
        pytest.skip("AMQP properties are RabbitMQ's")
    import pika

    body = b"[[1, 2], {}, {}]"
    before = worker.output.count("Dead-lettered")
    with pika.BlockingConnection(pika.URLParameters(module.app.broker_url)) as connection:
        channel = connection.channel()
        channel.queue_declare("celery.dead", durable=True)
        channel.queue_purge("celery.dead")
        channel.basic_publish("", "celery", body, pika.BasicProperties(headers=headers))
        good_task_runs(module, worker)
        wait_until(
            lambda: channel.queue_declare("celery.dead", passive=True).method.message_count,
            message="the message in celery.dead",
        )
        _, _, dead = channel.basic_get("celery.dead", auto_ack=True)
    assert dead == body  # as it came; only its properties could not be read
    assert worker.process.poll() is None
    lines = [line for line in worker.output.splitlines() if "Dead-lettered" in line]
    assert len(lines) == before + 1
    assert "AMQP" in lines[-1] and "deeper" in lines[-1]
