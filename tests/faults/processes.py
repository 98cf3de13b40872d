"""Processes of a worker, from /proc (Linux): its pool children, and whether one is gone."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.e2e.worker_harness import wait_until
from tests.support import WorkerProcess


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (every thread's list: a child belongs to the thread that
    forked it), sorted so a seeded choice among them is the same on every run."""
    found: set[int] = set()
    for listing in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.update(int(child) for child in listing.read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread (or the process) is gone
    return sorted(child for child in found if not gone(child))


def gone(pid: int) -> bool:
    """Dead, or a zombie nobody reaped yet (an orphan waits for pid 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


def kill_worker(worker: WorkerProcess, with_children: bool) -> set[int]:
    """SIGKILL the worker (and its pool children at the same moment, else they die by their
    parent-death signal); every pid it had, once all are gone."""
    main = worker.process.pid
    pids = {main, *children(main)}
    for pid in sorted(pids) if with_children else [main]:
        os.kill(pid, signal.SIGKILL)
    worker.process.wait(10)
    wait_until(lambda: all(gone(pid) for pid in pids), timeout=10, message="killed worker gone")
    return pids
