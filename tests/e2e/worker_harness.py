"""Shared by the worker end-to-end tests: a task module on the embedded SQLite broker.

Each test writes its own ``wtasks`` module (the app plus the tasks it needs) into its
``tmp_path``; the worker subprocess imports it through ``-A wtasks`` and the test process
imports the very same module as the client, so both sides agree on names and settings.
Broker and results are SQLite files in that directory, named by absolute path.
"""

from __future__ import annotations

import contextlib
import importlib
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from celeriac.protocol.message import Envelope
from celeriac.transports.base import Delivery, Transport

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
"""


def task_module(directory: Path, tasks: str, **settings: Any) -> dict[str, str]:
    """The files of a project whose ``wtasks`` module holds the app and ``tasks``."""
    header = _HEADER.format(
        broker=f"sqlite:///{directory}/broker.db",
        backend=f"db+sqlite:///{directory}/results.db",
        settings=settings,
    )
    return {f"{MODULE}.py": header + textwrap.dedent(tasks)}


def load(
    project: Callable[[dict[str, str]], Path], tmp_path: Path, tasks: str, **settings: Any
) -> tuple[Path, ModuleType]:
    """Write the task module and import it here (the client side)."""
    directory = project(task_module(tmp_path, tasks, **settings))
    return directory, importlib.import_module(MODULE)


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


def publish_raw(module: ModuleType, envelope: Envelope) -> None:
    """Publish an envelope as it is, past the client's checks (how bad messages arrive)."""
    with broker(module) as transport:
        transport.publish([envelope])


def log_lines(output: str, *needles: str) -> list[str]:
    """The lines of ``output`` that contain every one of ``needles``."""
    return [line for line in output.splitlines() if all(needle in line for needle in needles)]
