"""A broker restarted under a running worker: the worker reconnects and nothing is lost.

The Redis test runs its own Redis server (append-only file on, so the queues survive the
restart, as a production Redis would be configured) on a spare port, so the shared one is
untouched. The RabbitMQ test restarts the shared server's broker application
(``rabbitmqctl stop_app``/``start_app``: every connection drops, durable queues and
persistent messages survive), working in a virtual host of its own.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.redis_server import RedisServer
from tests.support import WorkerProcess

AMQP_APP = """
import time
from celeriac import Celery

app = Celery("restart_amqp", broker="amqp://guest:guest@127.0.0.1:5672/{vhost}",
             backend="db+sqlite:///{dir}/results.db")
app.conf.broker_connection_retry = True
app.conf.broker_connection_max_retries = None
app.conf.task_publish_retry_policy = {{"max_retries": 30, "interval_start": 0.2,
                                      "interval_step": 0.2, "interval_max": 1.0}}

@app.task(acks_late=True)
def slow_double(i):
    time.sleep(0.05)
    return 2 * i
"""

APP = """
import time
from celeriac import Celery

app = Celery("restart", broker="redis://127.0.0.1:{port}/0",
             backend="db+sqlite:///{dir}/results.db")
app.conf.broker_connection_retry = True
app.conf.broker_connection_max_retries = None

@app.task(acks_late=True)
def slow_double(i):
    time.sleep(0.05)
    return 2 * i
"""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(data)
    server.start()
    yield server
    server.stop()


@pytest.mark.redis
def test_worker_survives_a_broker_restart_and_loses_nothing(
    tmp_path: Path,
    redis_server: RedisServer,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    directory = project({"restart_app.py": APP.format(port=redis_server.port, dir=tmp_path)})
    import restart_app

    worker = start_worker(directory, "restart_app", "-c", "2")

    def restart() -> None:
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()

    try:
        drain_across(restart, restart_app, worker)
    finally:
        restart_app.app.close()


def drain_across(restart: Callable[[], None], app_module: Any, worker: WorkerProcess) -> None:
    """Send 40 tasks, ``restart`` the broker mid-drain (some tasks done, some held by the
    worker, some queued), send 20 more: every result comes back and the worker lives."""
    before = app_module.slow_double.delay_many([(i,) for i in range(40)])
    assert before[0].get(timeout=20) == 0  # the worker is consuming

    restart()

    after = app_module.slow_double.delay_many([(i,) for i in range(40, 60)])
    values = [result.get(timeout=60) for result in before + after]

    assert values == [2 * i for i in range(60)]
    assert worker.process.poll() is None, worker.output


@pytest.mark.amqp
def test_worker_survives_a_rabbitmq_restart_and_loses_nothing(
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed")
    from tests.conformance.transport_amqp import create_vhost, delete_vhost, rabbitmqctl

    vhost = create_vhost("restart")
    directory = project({"restart_amqp_app.py": AMQP_APP.format(vhost=vhost, dir=tmp_path)})
    import restart_amqp_app

    try:
        worker = start_worker(directory, "restart_amqp_app", "-c", "2")

        def restart() -> None:
            rabbitmqctl("stop_app")
            try:
                time.sleep(1.0)
            finally:
                rabbitmqctl("start_app")
                rabbitmqctl("await_startup")

        drain_across(restart, restart_amqp_app, worker)
        assert "lost the broker connection" in worker.output  # it did see the restart
    finally:
        restart_amqp_app.app.close()
        delete_vhost(vhost)
