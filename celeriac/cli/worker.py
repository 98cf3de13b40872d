"""``celeriac worker``."""

from __future__ import annotations

import sys

import click

from celeriac.cli.main import AppContext
from celeriac.exceptions import CeleriacError
from celeriac.worker.pools import POOLS


@click.command()
@click.option(
    "-P",
    "--pool",
    type=click.Choice([*POOLS, "processes"]),
    default=None,
    help="Pool implementation (default: prefork).",
)
@click.option(
    "-c",
    "--concurrency",
    type=int,
    default=None,
    help="Number of child processes or threads (default: number of CPUs).",
)
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume from.")
@click.option("-X", "--exclude-queues", default=None, help="Comma-separated queues to skip.")
@click.option("-l", "--loglevel", default="WARNING", help="DEBUG, INFO, WARNING, ERROR...")
@click.option("-f", "--logfile", default=None, help="Log to this file instead of stderr.")
@click.option("-n", "--hostname", default=None, help="Node name (default: celery@%h).")
@click.option(
    "--prefetch-multiplier",
    type=int,
    default=None,
    help="Messages reserved per process (worker_prefetch_multiplier).",
)
@click.option(
    "--max-tasks-per-child",
    type=int,
    default=None,
    help="Replace a child process after this many tasks.",
)
@click.option("-E", "--task-events", is_flag=True, default=False, help="Send task events.")
@click.option("-O", "optimization", default=None, help="Accepted for Celery compatibility.")
@click.option("-q", "--quiet", is_flag=True, default=False, help="No start-up banner.")
@click.pass_obj
def worker(
    ctx: AppContext,
    pool: str | None,
    concurrency: int | None,
    queues: str | None,
    exclude_queues: str | None,
    loglevel: str,
    logfile: str | None,
    hostname: str | None,
    prefetch_multiplier: int | None,
    max_tasks_per_child: int | None,
    task_events: bool,
    optimization: str | None,
    quiet: bool,
) -> None:
    """Start a worker."""
    from celeriac.worker.worker import Worker

    try:
        instance = Worker(
            ctx.app,
            hostname=hostname,
            concurrency=concurrency,
            pool=pool,
            queues=[name for name in (queues or "").split(",") if name],
            exclude_queues=[name for name in (exclude_queues or "").split(",") if name],
            loglevel=loglevel,
            logfile=logfile,
            prefetch_multiplier=prefetch_multiplier,
            max_tasks_per_child=max_tasks_per_child,
            quiet=quiet,
        )
        sys.exit(instance.start())
    except CeleriacError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
