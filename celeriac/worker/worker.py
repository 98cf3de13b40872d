"""The worker process: start the parts in a fixed order, run the consumer, stop in reverse.

Start: finalize the app (import task modules) → start the pool (fork children *before* any
broker connection exists, so none is shared across a fork) → connect the transport
(retrying per ``broker_connection_retry_on_startup``) → declare queues → consume.

Stop: the first SIGTERM/SIGINT is a warm shutdown (stop fetching, give back reserved
messages, let running tasks finish, settle their acks); a second one is a cold shutdown
(kill running tasks; late-acked messages go back to the broker).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from celeriac import signals
from celeriac.app.routing import queue_spec
from celeriac.exceptions import ImproperlyConfigured, OperationalError, WorkerTerminate
from celeriac.protocol import serializers
from celeriac.transports.base import Transport
from celeriac.utils.log import TaskContextFilter, TaskFormatter
from celeriac.wire.queues import QueueSpec
from celeriac.worker.consumer import Consumer
from celeriac.worker.pools import create_pool
from celeriac.worker.pools.base import Pool, PoolContext

if TYPE_CHECKING:
    from celeriac.app.base import Celery

logger = logging.getLogger("celeriac.worker")


def default_hostname(name: str | None) -> str:
    """``-n`` value: ``%h`` (hostname), ``%n`` (name part), ``%d`` (domain) as in Celery."""
    host = socket.gethostname()
    short, _, domain = host.partition(".")
    name = name or "celery@%h"
    if "@" not in name:
        name = f"{name}@%h"
    return name.replace("%h", host).replace("%n", short).replace("%d", domain)


class Worker:
    """``celeriac worker``: a consumer feeding a pool."""

    def __init__(
        self,
        app: Celery,
        hostname: str | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        queues: Sequence[str] | None = None,
        exclude_queues: Sequence[str] | None = None,
        loglevel: str | int | None = None,
        logfile: str | None = None,
        prefetch_multiplier: int | None = None,
        max_tasks_per_child: int | None = None,
        quiet: bool = False,
    ) -> None:
        conf = app.conf
        self.app = app
        self.hostname = default_hostname(hostname)
        self.pool_name = pool or conf.worker_pool
        self.concurrency = int(concurrency or conf.worker_concurrency or os.cpu_count() or 1)
        if self.pool_name == "solo":
            self.concurrency = 1
        self.queue_names = list(queues or [])
        self.exclude_queues = set(exclude_queues or [])
        self.loglevel = loglevel
        self.logfile = logfile
        multiplier = prefetch_multiplier
        if multiplier is None:
            multiplier = conf.worker_prefetch_multiplier
        self.prefetch_count = max(1, self.concurrency * int(multiplier)) if multiplier else 10**6
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.quiet = quiet
        self.shutdown_requests = 0
        self.pool: Pool | None = None
        self.transport: Transport | None = None
        self.consumer: Consumer | None = None
        self.started_at = 0.0

    # -- setup
    def setup_logging(self) -> None:
        level = self.loglevel if self.loglevel is not None else "WARNING"
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ImproperlyConfigured(f"unknown log level {self.loglevel!r}")
        if signals.setup_logging.has_listeners():
            signals.setup_logging.send(
                sender=None, loglevel=level, logfile=self.logfile, format=None, colorize=False
            )
            return
        conf = self.app.conf
        handler: logging.Handler = (
            logging.FileHandler(self.logfile) if self.logfile else logging.StreamHandler()
        )
        handler.setFormatter(TaskFormatter(conf.worker_log_format))
        handler.addFilter(TaskContextFilter())
        root = logging.getLogger()
        if conf.worker_hijack_root_logger:
            for existing in list(root.handlers):
                root.removeHandler(existing)
        root.addHandler(handler)
        root.setLevel(level)
        signals.after_setup_logger.send(
            sender=None,
            logger=root,
            loglevel=level,
            logfile=self.logfile,
            format=conf.worker_log_format,
            colorize=False,
        )

    def queues(self) -> list[QueueSpec]:
        resolver = self.app.publisher.routes
        if self.queue_names:
            specs = [resolver.get_queue(name) for name in self.queue_names]
        else:
            specs = list(resolver.queues.values())
        specs = [spec for spec in specs if spec.name not in self.exclude_queues]
        if not specs:
            raise ImproperlyConfigured("the worker has no queue to consume from")
        return [queue_spec(spec) for spec in specs]

    def accept(self) -> frozenset[str] | None:
        return serializers.content_types(self.app.conf.accept_content)

    # -- running
    def start(self) -> int:
        """Run until shut down; return the exit code."""
        self.started_at = time.monotonic()
        app = self.app
        signals.celeryd_init.send(sender=self.hostname, instance=self, conf=app.conf, options={})
        self.setup_logging()
        app.finalize()
        accept = self.accept()
        queues = self.queues()
        signals.celeryd_after_setup.send(sender=self.hostname, instance=self, conf=app.conf)
        signals.worker_init.send(sender=self)
        self.install_signal_handlers()
        try:
            self.pool = create_pool(
                self.pool_name,
                PoolContext(app, self.hostname, self.concurrency, accept, self.max_tasks_per_child),
            )
            self.pool.start()
            self.transport = self.connect()
            self.consumer = Consumer(
                app, self.transport, self.pool, queues, self.prefetch_count, accept
            )
            self.transport.declare(queues)
            self.banner(queues)
            signals.worker_ready.send(sender=self)
            logger.info("%s ready.", self.hostname)
            self.consumer.run(lambda: self.shutdown_requests > 0)
            self.stop(graceful=True)
        except WorkerTerminate:
            self.stop(graceful=False)
        except BaseException:
            self.stop(graceful=False)
            raise
        return 0

    def connect(self) -> Transport:
        conf = self.app.conf
        retry = conf.broker_connection_retry_on_startup
        if retry is None:
            retry = conf.broker_connection_retry
        max_retries = conf.broker_connection_max_retries
        attempt = 0
        url = self.app.broker_url
        while True:
            try:
                transport = self.app.create_transport()
                transport.size(self.queues()[0].name)  # touch the broker: fail here, clearly
                return transport
            except (OperationalError, ConnectionError, OSError) as exc:
                attempt += 1
                if not retry or (max_retries is not None and attempt > max_retries):
                    raise OperationalError(f"cannot connect to broker {_safe(url)}: {exc}") from exc
                delay = min(2.0 * attempt, 30.0)
                logger.error(
                    "Cannot connect to broker %s: %s. Trying again in %.0fs (attempt %d/%s).",
                    _safe(url),
                    exc,
                    delay,
                    attempt,
                    max_retries,
                )
                self.sleep_unless_stopping(delay)
                if self.shutdown_requests:
                    raise WorkerTerminate(1) from exc

    def sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.shutdown_requests:
            time.sleep(0.05)

    def banner(self, queues: Sequence[QueueSpec]) -> None:
        if self.quiet:
            return
        tasks = sorted(self.app.tasks.regular())
        lines = [
            f" -------------- {self.hostname} v0.1.0 (celeriac)",
            f"- ** ---------- app:         {self.app.main or '__main__'}",
            f"- ** ---------- transport:   {_safe(self.app.broker_url)}",
            f"- ** ---------- results:     {_safe(self.app.conf.result_backend or 'disabled')}",
            f"- ** ---------- concurrency: {self.concurrency} ({self.pool_name})",
            f"- ** ---------- queues:      {', '.join(q.name for q in queues)}",
            "",
            "[tasks]",
            *[f"  . {name}" for name in tasks],
            "",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)

    # -- stopping
    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(signum, self.on_shutdown_signal)

    def on_shutdown_signal(self, signum: int, frame: FrameType | None) -> None:
        self.shutdown_requests += 1
        if signum == signal.SIGQUIT or self.shutdown_requests > 1:
            logger.warning("worker: Cold shutdown (MainProcess)")
            raise WorkerTerminate(1)
        logger.warning("worker: Warm shutdown (MainProcess)")

    def stop(self, graceful: bool) -> None:
        signals.worker_shutting_down.send(
            sender=self.hostname, sig="SIGTERM", how="Warm" if graceful else "Cold", exitcode=0
        )
        consumer, pool, transport = self.consumer, self.pool, self.transport
        try:
            if consumer is not None and graceful:
                consumer.release_held()
                consumer.complete(pool.stop(graceful=True) if pool else [])
                consumer.flush()
            elif pool is not None:
                if consumer is not None:
                    # Started tasks keep their early acks: they must not run again.
                    with contextlib.suppress(Exception):
                        consumer.ack_started()
                        consumer.flush()
                pool.stop(graceful=False)
        finally:
            if transport is not None:
                try:
                    transport.close()
                except Exception as exc:
                    logger.warning("Closing the broker connection failed: %s", exc)
            signals.worker_shutdown.send(sender=self)
            self.app.close()


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:**@{host}" if ":" in credentials else url
    return url
