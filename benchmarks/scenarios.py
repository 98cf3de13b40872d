"""The measurements. Each takes a fresh :class:`~targets.Target` and returns plain numbers.

Workers are real subprocesses started through the CLI (``python -m celeriac … worker`` or
``python -m celery … worker``, on the system's own interpreter) and stopped with SIGTERM
(warm shutdown).

How a drain is timed without disturbing it: the queue is filled *before* the worker
starts, with ``mark(first)``, ``count - 2`` no-ops and ``mark(last)``. The two ``mark``
tasks write the wall-clock time they ran at into a file. The drain rate is
``(count - 1) / (t_last - t_first)``: first task done to last task done, taken from the
worker's own clock, so neither start-up nor the runner's polling is in it. The runner only
checks for the marker files (a ``stat`` every 5 ms) and reads the worker's CPU counters
in ``/proc`` when each one appears. With several pool processes the last message need not
finish last (the other process may still run the few it had queued), so with results on
the runner waits for every result before it stops the worker. It then counts what ran:
stored results (results on), or the count minus what is left in the queue (results off: a
warm shutdown hands jobs that never started back to the broker).
"""

from __future__ import annotations

import contextlib
import io
import os
import pstats
import signal
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from procstat import broker_pids, children_of, cpu_seconds, tree_cpu
from targets import BENCH_DIR, Target, library, python_env

POLL = 0.005


@contextlib.contextmanager
def running_worker(
    target: Target,
    pool: str,
    concurrency: int,
    command: list[str] | None = None,
    warm: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker subprocess for the duration of the block; its output goes to worker.log.

    It runs in a process group of its own. It is stopped with SIGTERM (warm shutdown), or,
    when ``warm`` is false because nothing it still holds matters, the whole group is
    killed at once (Celery's shutdowns on its SQLAlchemy transport take seconds, even cold).
    """
    log = open(target.workdir / "worker.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(
        command or target.worker_command(pool, concurrency),
        env=target.env(),
        cwd=target.workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_worker(process, warm)
        log.close()


def stop_worker(process: subprocess.Popen[bytes], warm: bool, timeout: float = 60) -> None:
    if warm and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    # Whatever is left of the worker's own process group (children included) goes now.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for_marker(path: Path, deadline: float, process: subprocess.Popen[bytes]) -> float | None:
    """The time written in ``path`` once it exists; None at the deadline or if the worker died."""
    while time.monotonic() < deadline:
        if path.exists():
            return float(path.read_text())
        if process.poll() is not None:
            return None
        time.sleep(POLL)
    return None


def worker_log_tail(target: Target) -> str:
    with contextlib.suppress(OSError):
        return (target.workdir / "worker.log").read_text(errors="replace")[-2000:]
    return ""


# -- 1. enqueue ------------------------------------------------------------------------------
def enqueue(target: Target, count: int, batch: int) -> dict[str, Any]:
    answer = target.client("enqueue", "--count", str(count), "--batch", str(batch))
    if "unsupported" in answer:
        return {"unsupported": answer["unsupported"]}
    wall, cpu = float(answer["wall"]), float(answer["cpu"])  # type: ignore[arg-type]
    return {
        "count": count,
        "batch": batch,
        "wall": wall,
        "rate": count / wall,
        "cpu_us_per_task": cpu / count * 1e6,
    }


# -- 2. drain --------------------------------------------------------------------------------
def drain(
    target: Target,
    count: int,
    results: bool,
    pool: str = "prefork",
    concurrency: int = 2,
    timeout: float = 120,
) -> dict[str, Any]:
    first, last = target.marker("first"), target.marker("last")
    fill = target.client(
        "fill",
        "--count",
        str(count),
        "--first",
        str(first),
        "--last",
        str(last),
        *(["--results"] if results else []),
    )
    outcome: dict[str, Any] = {
        "count": count,
        "results": results,
        "pool": pool,
        "concurrency": concurrency,
        "fill_wall": fill["wall"],
    }
    spawned = time.time()
    with running_worker(target, pool, concurrency) as worker:
        deadline = time.monotonic() + timeout
        t_first = wait_for_marker(first, deadline, worker)
        if t_first is None:
            raise RuntimeError(f"{target.system}: first task never ran\n{worker_log_tail(target)}")
        children = children_of(worker.pid)
        brokers = broker_pids() if target.network_broker else []
        cpu_start = tree_cpu(worker.pid, children)
        broker_start = sum(cpu_seconds(pid) for pid in brokers)
        t_last = wait_for_marker(last, deadline, worker)
        cpu = tree_cpu(worker.pid, children) - cpu_start
        broker_cpu = sum(cpu_seconds(pid) for pid in brokers) - broker_start
        if t_last is None:  # too slow for the time budget: report what got done
            now = time.time()
            done = count - int(target.client("size")["size"])  # type: ignore[call-overload]
            outcome.update(
                partial=True, done=done, rate=done / (now - t_first), seconds=now - t_first
            )
            return outcome
        if results:
            # With several pool processes the last message need not be the last to finish:
            # the other process may still run a few queued before it. Let them finish.
            wait_for_results(target, count, time.monotonic() + 10)
    # A warm shutdown hands jobs that had not started back to the broker; count what ran.
    ran = stored_results(target) if results else None
    if ran is None:
        ran = count - int(target.client("size")["size"])  # type: ignore[call-overload]
    check = f"{ran:,} ran" + (f", {count - ran} handed back at shutdown" if ran < count else "")
    outcome.update(
        partial=False,
        seconds=t_last - t_first,
        rate=(ran - 1) / (t_last - t_first),
        spawn_to_last=t_last - spawned,
        verified=check,
        ran=ran,
        parent_cpu_us=cpu.parent / ran * 1e6,
        children_cpu_us=cpu.children / ran * 1e6,
        broker_cpu_us=broker_cpu / ran * 1e6 if brokers else None,
        children=len(children),
    )
    return outcome


def stored_results(target: Target) -> int | None:
    """Successful results in the target's result store, when the benchmark can count them."""
    if target.results_db is not None:
        table = f"{library(target.system)}_taskmeta"
        try:
            with contextlib.closing(sqlite3.connect(target.results_db)) as conn:
                (stored,) = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE status = 'SUCCESS'"
                ).fetchone()
        except sqlite3.OperationalError:  # no table yet: nothing stored
            return 0
        return int(stored)
    if target.backend.startswith("redis"):
        import redis  # only for a Redis result backend

        client = redis.Redis.from_url(target.backend)
        return sum(1 for _ in client.scan_iter(match="celery-task-meta-*", count=1000))
    return None


def wait_for_results(target: Target, count: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        stored = stored_results(target)
        if stored is None or stored >= count:
            return
        time.sleep(0.05)


# -- 3. round-trip latency -------------------------------------------------------------------
def latency(
    target: Target, calls: int, warmup: int, pool: str, concurrency: int = 2
) -> dict[str, Any]:
    with running_worker(target, pool, concurrency, warm=False):
        answer = target.client("latency", "--count", str(calls), "--warmup", str(warmup))
    samples = sorted(answer["samples"])  # type: ignore[call-overload]
    return {"pool": pool, "calls": calls, "warmup": warmup, **percentiles(samples)}


def percentiles(samples: list[float]) -> dict[str, float]:
    def at(fraction: float) -> float:
        return samples[min(len(samples) - 1, round(fraction * (len(samples) - 1)))]

    return {
        "p50_ms": at(0.50) * 1e3,
        "p90_ms": at(0.90) * 1e3,
        "p99_ms": at(0.99) * 1e3,
        "max_ms": samples[-1] * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
    }


# -- 4. start-up -----------------------------------------------------------------------------
def startup(
    target: Target, pool: str = "prefork", concurrency: int = 2, timeout: float = 60
) -> float:
    """Seconds from spawning the worker to the end of a task queued before it started."""
    first = target.marker("first")
    target.client("fill", "--count", "1", "--first", str(first))
    spawned = time.time()
    with running_worker(target, pool, concurrency, warm=False) as worker:
        ran_at = wait_for_marker(first, time.monotonic() + timeout, worker)
    if ran_at is None:
        raise RuntimeError(f"{target.system}: the task never ran\n{worker_log_tail(target)}")
    return ran_at - spawned


def interpreter_startup(python: str) -> float:
    """Seconds to start and end ``python -c pass``: the floor under any worker's start."""
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=python_env(), check=True)
    return time.perf_counter() - started


# -- 5. profiles -----------------------------------------------------------------------------
def profile_publish(target: Target, count: int, batch: int, top: int) -> str:
    answer = target.client(
        "profile-publish", "--count", str(count), "--batch", str(batch), "--top", str(top)
    )
    return str(answer["profile"])


def profile_worker(
    target: Target, count: int, top: int, pool: str, concurrency: int, timeout: float = 300
) -> dict[str, Any]:
    """A worker under a CPU-clock cProfile draining ``count`` queued tasks (results on).

    With ``-P solo`` the one process does everything (fetch, decode, execute, store, ack);
    with prefork only the main process is profiled (fetch, dispatch, ack).
    """
    first, last = target.marker("first"), target.marker("last")
    target.client(
        "fill", "--count", str(count), "--first", str(first), "--last", str(last), "--results"
    )
    output = target.workdir / "worker.prof"
    command = [
        target.python,
        str(BENCH_DIR / "cpu_profile.py"),
        str(output),
        *target.worker_command(pool, concurrency)[1:],
    ]
    with running_worker(target, pool, concurrency, command=command) as worker:
        deadline = time.monotonic() + timeout
        t_first = wait_for_marker(first, deadline, worker)
        t_last = wait_for_marker(last, deadline, worker)
    if t_first is None or t_last is None or not output.exists():
        raise RuntimeError(f"profiled worker did not finish\n{worker_log_tail(target)}")
    text = io.StringIO()
    stats = pstats.Stats(str(output), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return {
        "count": count,
        "rate_under_profiler": (count - 1) / (t_last - t_first),
        "profile": text.getvalue(),
    }
