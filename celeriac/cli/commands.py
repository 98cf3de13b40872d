"""Small commands: ``call``, ``result``, ``purge``, ``report``."""

from __future__ import annotations

import json

import click

import celeriac
from celeriac._compiled import build_description
from celeriac.cli.main import AppContext


@click.command()
@click.argument("name")
@click.option("-a", "--args", default="[]", help="JSON list of positional arguments.")
@click.option("-k", "--kwargs", default="{}", help="JSON object of keyword arguments.")
@click.option("--countdown", type=float, default=None)
@click.option("--queue", default=None)
@click.pass_obj
def call(
    ctx: AppContext, name: str, args: str, kwargs: str, countdown: float | None, queue: str | None
) -> None:
    """Send a task by name and print its id."""
    result = ctx.app.send_task(
        name, json.loads(args), json.loads(kwargs), countdown=countdown, queue=queue
    )
    click.echo(result.id)


@click.command()
@click.argument("task_id")
@click.option("--traceback", "show_traceback", is_flag=True, default=False)
@click.pass_obj
def result(ctx: AppContext, task_id: str, show_traceback: bool) -> None:
    """Print the state and result of a task."""
    found = ctx.app.AsyncResult(task_id)
    click.echo(f"{found.state}: {found.traceback if show_traceback else found.result!r}")


@click.command()
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: all).")
@click.option("-f", "--force", is_flag=True, default=False, help="Do not ask.")
@click.pass_obj
def purge(ctx: AppContext, queues: str | None, force: bool) -> None:
    """Delete every waiting message from the queues."""
    app = ctx.app
    names = [name for name in (queues or "").split(",") if name] or list(
        app.publisher.routes.queues
    )
    if not force:
        click.confirm(f"Delete all waiting messages in {', '.join(names)}?", abort=True)
    transport = app.create_transport()
    try:
        total = sum(transport.purge(name) for name in names)
    finally:
        transport.close()
    click.echo(f"Purged {total} message(s) from {len(names)} queue(s).")


@click.command()
@click.pass_obj
def report(ctx: AppContext) -> None:
    """Show the build, the app and the settings that differ from the defaults."""
    app = ctx.app
    click.echo(f"celeriac {celeriac.__version__}, {build_description()}")
    click.echo(f"app: {app.main} broker: {app.broker_url}")
    for name, value in app.conf.changes().items():
        click.echo(f"{name}: {value!r}")


COMMANDS = [call, result, purge, report]
