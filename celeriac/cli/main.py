"""``celeriac [-A APP] COMMAND``: the root command and its global options."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from celeriac.app.base import Celery
from celeriac.cli.app_loader import find_app
from celeriac.exceptions import CeleriacError


class AppContext:
    """Carries ``-A`` between the root command and subcommands; loads the app on demand."""

    def __init__(
        self,
        app_name: str | None,
        broker: str | None,
        result_backend: str | None,
        app: Celery | None = None,
    ) -> None:
        self.app_name = app_name
        self.broker = broker
        self.result_backend = result_backend
        self._app = app

    @property
    def app(self) -> Celery:
        if self._app is None:
            self._app = find_app(self.app_name) if self.app_name else Celery("default")
            if self.broker:
                self._app.conf.broker_url = self.broker
            if self.result_backend:
                self._app.conf.result_backend = self.result_backend
        return self._app


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-A", "--app", "app_name", envvar="CELERIAC_APP", help="The app: module[:attr].")
@click.option("-b", "--broker", default=None, help="Broker URL (overrides broker_url).")
@click.option("--result-backend", default=None, help="Result backend URL.")
@click.option(
    "--workdir",
    default=None,
    type=click.Path(file_okay=False),
    help="Change to this directory first.",
)
@click.version_option("0.1.0", prog_name="celeriac")
@click.pass_context
def cli(
    context: click.Context,
    app_name: str | None,
    broker: str | None,
    result_backend: str | None,
    workdir: str | None,
) -> None:
    """celeriac: a distributed task queue that speaks Celery's protocol."""
    if workdir:
        import os

        os.chdir(workdir)
    if context.obj is None:
        context.obj = AppContext(app_name, broker, result_backend)


def _register_commands() -> None:
    from celeriac.cli import commands, demo, worker

    cli.add_command(worker.worker)
    cli.add_command(demo.demo)
    for command in commands.COMMANDS:
        cli.add_command(command)


_register_commands()


def main(argv: Sequence[str] | None = None) -> Any:
    try:
        return cli.main(args=list(argv) if argv is not None else None, prog_name="celeriac")
    except CeleriacError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


def run_with_app(app: Celery, argv: list[str]) -> None:
    """Run a command with an app object instead of ``-A`` (``app.worker_main``)."""
    try:
        cli.main(args=argv, prog_name="celeriac", obj=AppContext(None, None, None, app))
    except SystemExit as exc:
        if exc.code:
            raise
