"""Shared fixtures: a project directory on sys.path, and worker subprocesses."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import celeriac
from celeriac._compiled import HOT_MODULES, build_description, compiled
from tests.support import WorkerProcess, write_project


def pytest_report_header() -> str:
    return f"celeriac: {build_description()}, from {os.path.dirname(celeriac.__file__)}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """``CELERIAC_EXPECT_BUILD=plain|compiled`` (CI): refuse to test another build than meant."""
    expected = os.environ.get("CELERIAC_EXPECT_BUILD")
    found = {0: "plain", len(HOT_MODULES): "compiled"}.get(len(compiled()), "partly compiled")
    if expected and expected != found:
        raise pytest.UsageError(f"CELERIAC_EXPECT_BUILD={expected}, but this is {found}")


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Path]]:
    """Write modules into tmp_path and make them importable; forget them afterwards."""
    written: list[str] = []

    def make(files: dict[str, str]) -> Path:
        write_project(tmp_path, files)
        written.extend(name.removesuffix(".py").replace("/", ".") for name in files)
        return tmp_path

    sys.path.insert(0, str(tmp_path))
    yield make
    sys.path.remove(str(tmp_path))
    for module in list(sys.modules):
        if any(module == name or module.startswith(f"{name}.") for name in written):
            del sys.modules[module]


@pytest.fixture
def start_worker() -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses; every one still running is stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(project: Path, app: str, *args: str, wait: bool = True,
              **kwargs: object) -> WorkerProcess:
        worker = WorkerProcess(project, app, args, **kwargs)  # type: ignore[arg-type]
        workers.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    for worker in workers:
        worker.stop()
