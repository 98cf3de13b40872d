"""Shared by the worker end-to-end tests: a task module on the embedded SQLite broker.

Each test writes its own ``wtasks`` module (the app plus the tasks it needs) into its
``tmp_path``; the worker subprocess imports it through ``-A wtasks`` and the test process
imports the very same module as the client, so both sides agree on names and settings.
Broker and results are SQLite files in that directory, named by absolute path.

Tasks talk to the test through files in that directory: ``note(name)`` appends a line
(the pid by default), ``gate_open(task_id)`` tells whether the test has opened the task's
gate, so a test can hold a task in a known state and look at it, without sleeping.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from celeriac.protocol.message import Envelope
from celeriac.transports.base import Transport
from celeriac.wire.queues import Delivery
from tests.support import WorkerProcess, write_project

MODULE = "wtasks"

_HEADER = """\
import asyncio
import os
import signal
import time

from celeriac import Celery
from celeriac.exceptions import SoftTimeLimitExceeded

app = Celery("wtasks", broker={broker!r}, backend={backend!r})
app.conf.update({settings!r})

HERE = os.path.dirname(os.path.abspath(__file__))


def note(name, text=""):
    # Appends, so a task that runs twice leaves two lines.
    with open(os.path.join(HERE, name), "a") as notes:
        notes.write(f"{{text or os.getpid()}}\\n")


def gate_open(task_id):
    return os.path.exists(os.path.join(HERE, f"go-{{task_id}}"))
"""


def task_module(
    directory: Path,
    tasks: str,
    broker: str | None = None,
    backend: str | None = None,
    **settings: Any,
) -> dict[str, str]:
    """The files of a project whose ``wtasks`` module holds the app and ``tasks``; the
    broker and results are SQLite files in ``directory`` unless given."""
    header = _HEADER.format(
        broker=broker or f"sqlite:///{directory}/broker.db",
        backend=backend or f"db+sqlite:///{directory}/results.db",
        settings=settings,
    )
    return {f"{MODULE}.py": header + textwrap.dedent(tasks)}


def load(
    project: Callable[[dict[str, str]], Path], tmp_path: Path, tasks: str, **settings: Any
) -> tuple[Path, ModuleType]:
    """Write the task module and import it here (the client side)."""
    directory = project(task_module(tmp_path, tasks, **settings))
    return directory, importlib.import_module(MODULE)


@contextlib.contextmanager
def shared_worker(
    directory: Path, tasks: str, *args: str, **settings: Any
) -> Iterator[tuple[ModuleType, WorkerProcess]]:
    """A task module and one worker for a whole test module (worker start-up is the slow
    part of these tests); the module is imported here and forgotten afterwards."""
    write_project(directory, task_module(directory, tasks, **settings))
    sys.path.insert(0, str(directory))
    worker = WorkerProcess(directory, MODULE, args)
    try:
        yield importlib.import_module(MODULE), worker.wait_ready()
    finally:
        worker.stop()
        sys.path.remove(str(directory))
        sys.modules.pop(MODULE, None)


def wait_until(
    condition: Callable[[], Any], timeout: float = 10.0, message: str = "condition"
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached after {timeout}s")
        time.sleep(0.02)


@contextlib.contextmanager
def broker(module: ModuleType) -> Iterator[Transport]:
    """A transport of the test process, closed (and its reservations given back) after."""
    transport = module.app.create_transport()
    try:
        yield transport
    finally:
        transport.close()


def take_all(transport: Transport, queue: str, timeout: float = 0.2) -> list[Delivery]:
    """Reserve every ready message of ``queue`` (to look at them)."""
    taken: list[Delivery] = []
    while batch := transport.fetch([queue], 100, timeout if not taken else 0.0):
        taken.extend(batch)
    return taken


def publish_raw(module: ModuleType, *envelopes: Envelope) -> None:
    """Publish envelopes as they are, in one batch, past the client's checks."""
    with broker(module) as transport:
        transport.publish(list(envelopes))


def runs(directory: Path, task_id: str) -> list[str]:
    """What a task wrote with ``note(f"ran-{id}")``: one line (its pid) per run."""
    path = directory / f"ran-{task_id}"
    return path.read_text().split() if path.exists() else []


def open_gate(directory: Path, task_id: str) -> None:
    """Let a task waiting on ``gate_open(id)`` go on."""
    (directory / f"go-{task_id}").touch()


def log_lines(output: str, *needles: str) -> list[str]:
    """The warning and error lines of ``output`` that contain every one of ``needles``.

    INFO lines ("Task ... received") are left out: the one line a bad message gets is the
    error that names it and the reason.
    """
    return [
        line
        for line in output.splitlines()
        if all(needle in line for needle in needles)
        and ": INFO/" not in line
        and ": DEBUG/" not in line
    ]
