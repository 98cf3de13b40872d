"""``celeriac demo``: a newcomer's first minute, with no server at all.

Starts a worker (2 processes) on the embedded SQLite broker, sends a batch of tasks with a
progress bar, waits for every result, then shows a few results and the rates.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import click


@click.command()
@click.option("-n", "--tasks", "count", type=int, default=2000, help="How many tasks to send.")
@click.option("-c", "--concurrency", type=int, default=2, help="Worker processes.")
def demo(count: int, concurrency: int) -> None:
    """Run a worker on the embedded broker and send it a batch of tasks."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from celeriac.cli.demo_app import DEMO_DIR, add, app
    from celeriac.result import ResultSet

    console = Console()
    for leftover in DEMO_DIR.glob("*.sqlite3*"):
        if leftover.is_dir():  # the broker's holder lock files
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    console.print(f"[bold]celeriac demo[/] — embedded broker and results in {DEMO_DIR}")
    started = time.perf_counter()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "-A",
            "celeriac.cli.demo_app",
            "worker",
            "-c",
            str(concurrency),
            "-q",
            "-l",
            "WARNING",
        ],
        env={**os.environ, "CELERIAC_DEMO_DIR": str(DEMO_DIR.parent)},
    )
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            sending = progress.add_task("sending ", total=count)
            results = []
            send_started = time.perf_counter()
            for start in range(0, count, 100):
                batch = [(i, i) for i in range(start, min(start + 100, count))]
                results.extend(add.delay_many(batch))
                progress.update(sending, advance=len(batch))
            send_seconds = time.perf_counter() - send_started
            done_task = progress.add_task("finished", total=count)
            waiting = ResultSet(results)
            deadline = time.monotonic() + 120
            completed = 0
            while completed < count and time.monotonic() < deadline:
                time.sleep(0.1)  # a light poll: the client must not slow the worker down
                completed = waiting.completed_count()
                progress.update(done_task, completed=completed)
            values = waiting.get(timeout=10)
            progress.update(done_task, completed=count)
        total_seconds = time.perf_counter() - started
        drain_seconds = time.perf_counter() - send_started
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        app.close()
    table = Table(title="a few results")
    table.add_column("task id")
    table.add_column("call")
    table.add_column("result", justify="right")
    for index in (0, 1, count // 2, count - 1):
        if 0 <= index < count:
            table.add_row(results[index].id, f"add({index}, {index})", str(values[index]))
    console.print(table)
    wrong = sum(1 for index, value in enumerate(values) if value != 2 * index)
    console.print(
        f"sent {count} tasks in {send_seconds:.2f}s "
        f"([bold]{count / send_seconds:,.0f}[/] tasks/s), all results back in "
        f"{drain_seconds:.2f}s ([bold]{count / drain_seconds:,.0f}[/] tasks/s), "
        f"{total_seconds:.2f}s from start; wrong results: {wrong}"
    )
    if wrong:
        sys.exit(1)
