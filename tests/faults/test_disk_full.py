"""A full disk under the embedded SQLite broker: its files live on a tmpfs of the test's
own (mounting needs root or CAP_SYS_ADMIN: skipped otherwise), filled up with a file that
is removed afterwards. The ledger stays on the ordinary disk."""

from __future__ import annotations

import errno
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from celeriac.exceptions import OperationalError
from tests.e2e.worker_harness import MODULE
from tests.faults.ledger import (
    CONCURRENCY,
    Faults,
    check,
    load_app,
    publish,
    run_some_more,
    settle,
)
from tests.support import WorkerProcess

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs mounts: Linux"),
]

StartWorker = Callable[..., WorkerProcess]
Project = Callable[[dict[str, str]], Path]
Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Mount]:
    """``tmpfs(size)``: a fresh tmpfs of that size (``2m``), unmounted after the test."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small tmpfs for the full-disk tests")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        disk = tmp_path / f"disk-{len(mounted)}"
        disk.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(
                "cannot mount a tmpfs for the full-disk tests (needs root or CAP_SYS_ADMIN): "
                f"{done.stderr.strip()}"
            )
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        # Lazy: a worker still holding the database open must not keep the mount busy.
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30, check=False)


def fill(disk: Path) -> Path:
    """Write a file until no byte is left on ``disk``; remove it to free the space."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (65536, 4096, 512, 1):  # the last bytes too: tmpfs counts pages
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


def sqlite_app(project: Project, tmp_path: Path, disk: Path) -> tuple[Path, ModuleType]:
    return load_app(project, tmp_path, broker=f"sqlite:///{disk}/broker.db")


def test_publishing_on_a_full_disk_fails_clearly_and_recovers(
    tmpfs: Mount,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
) -> None:
    disk = tmpfs("2m")
    directory, wtasks = sqlite_app(project, tmp_path, disk)
    request.addfinalizer(wtasks.app.close)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))
    sent = publish(wtasks, "late", rng, 20)
    settle(directory, sent, Faults(), quiet=0.1)

    filler = fill(disk)
    try:
        # Free pages inside the database may take a few more messages: publish until not.
        with pytest.raises(OperationalError, match="disk is full"):
            for _ in range(200):
                sent += publish(wtasks, "late", rng, 1)
        time.sleep(1.5)  # an idle worker polls and looks for dead holders meanwhile
        assert worker.process.poll() is None, worker.output
    finally:
        filler.unlink()

    sent += publish(wtasks, "late", rng, 20)
    faults = Faults(count=1)  # explains nothing: no loss, no second run
    runs = settle(directory, sent, faults)
    check("SQLite disk full, idle worker, late", "late", runs, sent, faults)
    assert worker.stop() == 0, worker.output


def fill_under_load(
    disk: Path,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
    count: int,
) -> tuple[Path, WorkerProcess, list[str]]:
    """``count`` tasks draining when the disk fills up for a second (their acks meet it)."""
    directory, wtasks = sqlite_app(project, tmp_path, disk)
    request.addfinalizer(wtasks.app.close)
    sent = publish(wtasks, "late", rng, count)
    worker = start_worker(directory, MODULE, "-c", str(CONCURRENCY))
    run_some_more(directory, rng)
    filler = fill(disk)
    try:
        time.sleep(1.0)
        assert worker.process.poll() is None, worker.output[-3000:]
    finally:
        filler.unlink()
    return directory, worker, sent


def test_worker_under_load_rides_out_a_full_disk(
    tmpfs: Mount,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
) -> None:
    # Room for the WAL to reach its checkpoint size (4 MB) once the filler is gone.
    disk = tmpfs("16m")
    directory, worker, sent = fill_under_load(
        disk, rng, tmp_path, project, start_worker, request, 200
    )

    faults = Faults(count=1)
    runs = settle(directory, sent, faults)
    assert worker.process.poll() is None, worker.output[-3000:]
    check("SQLite disk full, under load, late", "late", runs, sent, faults)
    assert "cannot grow" in worker.output  # it did meet the full disk
    assert worker.stop() == 0, worker.output[-3000:]


def test_worker_under_load_recovers_on_a_disk_smaller_than_the_wal(
    tmpfs: Mount,
    rng: random.Random,
    tmp_path: Path,
    project: Project,
    start_worker: StartWorker,
    request: pytest.FixtureRequest,
) -> None:
    disk = tmpfs("2m")
    directory, worker, sent = fill_under_load(
        disk, rng, tmp_path, project, start_worker, request, 300
    )

    faults = Faults(count=1)
    runs = settle(directory, sent, faults)
    assert worker.process.poll() is None, worker.output[-3000:]
    check("SQLite disk full, 2 MB disk, late", "late", runs, sent, faults)
