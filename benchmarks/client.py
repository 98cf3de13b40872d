"""The client side of each scenario, run by ``run.py`` in a fresh process per step.

A fresh process per step keeps celeriac and Celery out of each other's way (never both
imported in one process) and starts every measurement without warm connections left over
from a previous scenario. Each action prints one JSON object on stdout.

    BENCH_SYSTEM=celeriac BENCH_BROKER=... python benchmarks/client.py enqueue --count 20000
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import bench_tasks

app = bench_tasks.app
IS_CELERIAC = not type(app).__module__.startswith("celery.")


def send_batch(task: Any, count: int, batch: int) -> None:
    """``count`` calls of ``task()``: in batches with ``delay_many`` where it exists."""
    if batch > 1 and hasattr(task, "delay_many"):
        for start in range(0, count, batch):
            task.delay_many([()] * min(batch, count - start))
    else:
        for _ in range(count):
            task.delay()


def timed(action: Callable[[], object]) -> dict[str, float]:
    """Wall and CPU time of ``action``; CPU of this process includes an embedded broker."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def enqueue(options: argparse.Namespace) -> dict[str, Any]:
    """Publish ``count`` no-op tasks; the first call (connection, declare) is not timed."""
    bench_tasks.noop.delay()
    if options.batch > 1 and not hasattr(bench_tasks.noop, "delay_many"):
        return {"unsupported": "no batch publish API"}
    return timed(lambda: send_batch(bench_tasks.noop, options.count, options.batch))


def fill(options: argparse.Namespace) -> dict[str, Any]:
    """Queue a drain: ``mark(first)``, ``count - 2`` no-ops, ``mark(last)``."""
    noop = bench_tasks.noop if options.results else bench_tasks.noop_quiet
    mark = bench_tasks.mark if options.results else bench_tasks.mark_quiet
    started = time.perf_counter()
    mark.delay(options.first)
    send_batch(noop, max(options.count - 2, 0), 500)
    if options.last:
        mark.delay(options.last)
    return {"wall": time.perf_counter() - started}


def latency(options: argparse.Namespace) -> dict[str, Any]:
    """Sequential ``delay().get()`` round trips, after ``warmup`` untimed ones."""
    for _ in range(options.warmup):
        bench_tasks.noop.delay().get(timeout=60)
    samples = []
    for _ in range(options.count):
        started = time.perf_counter()
        bench_tasks.noop.delay().get(timeout=60)
        samples.append(time.perf_counter() - started)
    return {"samples": samples, "median": statistics.median(samples)}


def profile_publish(options: argparse.Namespace) -> dict[str, Any]:
    """``delay()`` (and ``delay_many``) under cProfile: CPU per call and the top functions."""
    bench_tasks.noop.delay()
    profiler = cProfile.Profile()
    profiler.enable()
    send_batch(bench_tasks.noop, options.count, options.batch)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(options.top)
    stats.sort_stats("cumulative").print_stats(options.top)
    return {"profile": text.getvalue()}


def size(options: argparse.Namespace) -> dict[str, Any]:
    """Ready messages left in the default queue."""
    if IS_CELERIAC:
        transport = app.create_transport()
        try:
            return {"size": transport.size("celery")}
        finally:
            transport.close()
    with app.connection_for_write() as connection:
        try:
            declared = connection.default_channel.queue_declare("celery", passive=True)
        except connection.channel_errors:  # Redis: an empty queue is no key at all
            return {"size": 0}
        return {"size": declared.message_count}


def purge(options: argparse.Namespace) -> dict[str, Any]:
    """Empty the default queue (used between scenarios on a shared network broker)."""
    if IS_CELERIAC:
        transport = app.create_transport()
        try:
            return {"purged": transport.purge("celery")}
        finally:
            transport.close()
    return {"purged": app.control.purge()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("enqueue")
    command.add_argument("--count", type=int, default=20000)
    command.add_argument("--batch", type=int, default=1)
    command.set_defaults(action=enqueue)
    command = commands.add_parser("fill")
    command.add_argument("--count", type=int, default=20000)
    command.add_argument("--results", action="store_true")
    command.add_argument("--first", required=True)
    command.add_argument("--last", default="")
    command.set_defaults(action=fill)
    command = commands.add_parser("latency")
    command.add_argument("--count", type=int, default=500)
    command.add_argument("--warmup", type=int, default=50)
    command.set_defaults(action=latency)
    command = commands.add_parser("profile-publish")
    command.add_argument("--count", type=int, default=5000)
    command.add_argument("--batch", type=int, default=1)
    command.add_argument("--top", type=int, default=20)
    command.set_defaults(action=profile_publish)
    commands.add_parser("size").set_defaults(action=size)
    commands.add_parser("purge").set_defaults(action=purge)
    options = parser.parse_args()
    try:
        print(json.dumps(options.action(options)))
    finally:
        app.close()


if __name__ == "__main__":
    main()
