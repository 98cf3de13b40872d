"""CPU time and memory of a process and of its children, read from ``/proc`` (Linux; no psutil
needed).

Read at the start and the end of a drain, the difference divided by the task count is the
CPU each task cost in the worker's main process (fetch, dispatch, ack) and in its pool
children (decode, execute, store the result).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After the name: state, ppid, ... utime is field 14 and stime 15 of the full line.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid``, by scanning ``/proc`` for their parent id."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(name))
    return found


#: Process names of the local broker servers whose CPU a drain reports.
BROKER_PROCESSES = ("redis-server", "beam.smp")


def broker_pids() -> list[int]:
    """Local broker server processes (Redis, RabbitMQ's Erlang VM), found by name."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/comm") as handle:
                    command = handle.read().strip()
            except OSError:
                continue
            if command in BROKER_PROCESSES:
                found.append(int(name))
    return found


@dataclass(frozen=True)
class TreeCpu:
    """CPU seconds of a parent and the sum over its current children."""

    parent: float
    children: float

    def __sub__(self, earlier: TreeCpu) -> TreeCpu:
        return TreeCpu(self.parent - earlier.parent, self.children - earlier.children)


def tree_cpu(pid: int, children: list[int]) -> TreeCpu:
    return TreeCpu(cpu_seconds(pid), sum(cpu_seconds(child) for child in children))


def memory_kb(pid: int) -> dict[str, int] | None:
    """Resident memory of one process in KiB (None if it is gone).

    ``rss`` is ``VmRSS`` (what ``ps`` shows; a forked child counts the pages it still shares
    with its parent), ``anon`` its anonymous part (``RssAnon``: the heap, where a leak shows),
    and ``pss`` the proportional share from ``smaps_rollup`` (shared pages divided among the
    processes that map them), when the kernel has it.
    """
    found: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    found["rss" if key == "VmRSS" else "anon"] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    if "rss" not in found:  # a zombie has no memory left
        return None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    found["pss"] = int(line.split()[1])
                    break
    except OSError:
        pass
    return found
