"""Shared by the Celery interoperability tests: peers, task modules and brokers.

The two sides never see each other's code. The Celery worker imports ``celery_tasks``
(which imports ``celery``), the celeriac worker imports ``celeriac_tasks`` (which imports
``celeriac``); both modules define the very same tasks under the same explicit names
(``interop.*``), from one shared body, so a test can send a task by name to either side.
The clients live in the test process: a Celery app and a celeriac app configured alike.

Exceptions that are not builtins live in ``interop_errors`` (plain Python, importing
neither library): the workers raise them and the test process imports the module, since
both Celery and celeriac re-create a stored exception only from a module already loaded.

Tasks reach the test through Redis (the result database): ``interop.record`` pushes a
label on a list, so a test reads the order in which a worker ran tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support import WorkerProcess, write_project

REDIS_HOST = "127.0.0.1:6379"
#: Databases of this suite alone: flushed before and after it.
BROKER_DB = 8
RESULTS_DB = 9
REDIS_BROKER = f"redis://{REDIS_HOST}/{BROKER_DB}"
REDIS_RESULTS = f"redis://{REDIS_HOST}/{RESULTS_DB}"
AMQP_BROKER = "amqp://guest:guest@127.0.0.1:5672"
#: RabbitMQ declares a queue's arguments once and refuses a different declaration, so
#: every app here (clients and workers, both sides) declares queues with this maximum.
MAX_PRIORITY = 10
TIMEOUT = 30

ERRORS_MODULE = """
class InteropError(Exception):
    '''An application exception both sides and the test process can import.'''
"""

_CELERY_HEADER = """
from celery import Celery

app = Celery("celery_tasks", broker=os.environ["INTEROP_BROKER"],
             backend=os.environ["INTEROP_BACKEND"])
"""

_CELERIAC_HEADER = """
from celeriac import Celery

app = Celery("celeriac_tasks", broker=os.environ["INTEROP_BROKER"],
             backend=os.environ["INTEROP_BACKEND"])
"""

#: The tasks, the same for both sides (only the import of the library differs).
_TASKS = """
app.conf.update(
    task_default_queue=os.environ["INTEROP_QUEUE"],
    task_queue_max_priority={max_priority},
    worker_prefetch_multiplier=1,
    result_extended=True,
    worker_enable_remote_control=False,
    broker_connection_retry_on_startup=True,
)
NOTES = redis.Redis.from_url({notes!r})


def type_names(value):
    if isinstance(value, list):
        return [type_names(item) for item in value]
    if isinstance(value, dict):
        return {{key: type_names(item) for key, item in value.items()}}
    return type(value).__name__


@app.task(name="interop.echo")
def echo(*args, **kwargs):
    # The values back (serialized by this side) and the types this side saw them as.
    return {{"args": list(args), "kwargs": kwargs,
            "types": {{"args": type_names(list(args)), "kwargs": type_names(kwargs)}}}}


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.mul")
def mul(x, y):
    return x * y


@app.task(name="interop.tsum")
def tsum(numbers):
    return sum(numbers)


@app.task(name="interop.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="interop.fail_custom")
def fail_custom(message, code):
    raise interop_errors.InteropError(message, code)


@app.task(name="interop.stamp")
def stamp():
    # When it ran, by the wall clock both sides share.
    return time.time()


@app.task(name="interop.record")
def record(key, label):
    NOTES.rpush(key, label)
    return label


@app.task(name="interop.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="interop.errback")
def errback(request, exc, traceback):
    # "New style" (more than one argument): the worker calls it in its own process.
    NOTES.rpush(f"errback-{{request.id}}", f"{{type(exc).__name__}}: {{exc}}")


@app.task(name="interop.errback_by_id")
def errback_by_id(task_id):
    # "Old style": sent as a task, with the failed task's id.
    NOTES.rpush(f"errback-{{task_id}}", "by id")


@app.task(name="interop.retry_twice", bind=True, max_retries=5)
def retry_twice(self, token):
    NOTES.rpush(token, self.request.id)
    if self.request.retries < 2:
        raise self.retry(countdown=0.2)
    return {{"retries": self.request.retries, "token": token}}
"""


def task_modules(directory: Path) -> Path:
    """Write ``celery_tasks``, ``celeriac_tasks`` and ``interop_errors`` into ``directory``."""
    body = textwrap.dedent(_TASKS).format(max_priority=MAX_PRIORITY, notes=REDIS_RESULTS)
    common = "import os\nimport time\n\nimport redis\n\nimport interop_errors\n"
    return write_project(
        directory,
        {
            "interop_errors.py": ERRORS_MODULE,
            "celery_tasks.py": common + textwrap.dedent(_CELERY_HEADER) + body,
            "celeriac_tasks.py": common + textwrap.dedent(_CELERIAC_HEADER) + body,
        },
    )


def peer_env(project: Path, broker: str, backend: str, queue: str) -> dict[str, str]:
    return {
        "PYTHONPATH": str(project),
        "INTEROP_BROKER": broker,
        "INTEROP_BACKEND": backend,
        "INTEROP_QUEUE": queue,
    }


def broker_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The broker of a parameter: this suite's Redis database or its RabbitMQ vhost."""
    if kind == "redis":
        return REDIS_BROKER
    return str(request.getfixturevalue("amqp_vhost"))


def backend_url(kind: str) -> str:
    return REDIS_RESULTS if kind == "redis" else "rpc://"


def new_queue() -> str:
    return f"interop.{uuid.uuid4().hex[:10]}"


class CeleryWorkerProcess(WorkerProcess):
    """``python -m celery -A <app> worker ...``: a real Celery 5 worker, run like ours."""

    def __init__(
        self, project: Path, app: str, args: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> None:
        self.project = project
        self.log_path = project / f"celery-worker-{time.monotonic_ns()}.log"
        command = [
            sys.executable, "-m", "celery", "-A", app, "worker", "-l", "INFO",
            "--without-heartbeat", "--without-mingle", "--without-gossip", *args,
        ]  # fmt: skip
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - kept open while running
        self.process = subprocess.Popen(
            command, cwd=project, stdout=self.log_file, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip

    def wait_ready(self, timeout: float = 40.0) -> CeleryWorkerProcess:
        super().wait_ready(timeout)
        return self

    def stop(self, sig: int = signal.SIGQUIT, timeout: float = 20.0) -> int:
        # Cold shutdown: the tests have read every result by then, and Celery's warm
        # shutdown on RabbitMQ waits up to 10 s for its event loop to wake up.
        return super().stop(sig, timeout)


def start_celeriac_worker(project: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    return WorkerProcess(project, "celeriac_tasks", args, env=env).wait_ready(40.0)


def start_celery_worker(project: Path, env: dict[str, str], *args: str) -> WorkerProcess:
    return CeleryWorkerProcess(project, "celery_tasks", args, env=env).wait_ready(40.0)


def close_celery_app(app: Any) -> None:
    """Close a Celery app of this process for good: ``app.close()`` leaves the result
    backend's connections (its pub/sub or reply consumer, its Redis pool) open."""
    backend = app.backend
    consumer = getattr(backend, "result_consumer", None)
    # rpc:// consumes replies, redis:// subscribes: each only once a result was awaited.
    if any(getattr(consumer, name, None) is not None for name in ("_consumer", "_pubsub")):
        consumer.stop()
    client = getattr(backend, "client", None)  # redis://
    if client is not None:
        client.connection_pool.disconnect()
    app.close()
