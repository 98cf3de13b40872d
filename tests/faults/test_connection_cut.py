"""Cut connections: the worker reaches its broker through a loopback TCP proxy (the test
publishes directly), and every proxied connection is dropped a few times mid-run, each
time refusing new ones for a moment. The worker reconnects; acks_late tasks: none lost,
and a task runs again only if it was running, or its ack on its way, at a cut."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.redis_server import RedisServer
from tests.e2e.worker_harness import MODULE
from tests.faults.ledger import CONCURRENCY, Faults, check, load_app, publish, run_some_more, settle
from tests.faults.proxy import TcpProxy
from tests.support import WorkerProcess

pytestmark = pytest.mark.faults

SENT = 200
CUTS = 3


@dataclass(frozen=True)
class Upstream:
    name: str
    port: int
    #: The broker URL through ``host:port`` (the proxy's), or the real one by default.
    url_template: str
    #: What the worker logs when it notices the cut.
    reconnect_line: str

    def url(self, port: int | None = None) -> str:
        return self.url_template.format(port=port or self.port)


@pytest.fixture
def amqp_vhost() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is not installed")
    from tests.conformance.transport_amqp import create_vhost, delete_vhost

    vhost = create_vhost("faults")
    yield vhost
    delete_vhost(vhost)


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("amqp", marks=pytest.mark.amqp),
    ]
)
def upstream(request: pytest.FixtureRequest) -> Upstream:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Upstream("redis", server.port, "redis://127.0.0.1:{port}/0", "Redis at")
    vhost: str = request.getfixturevalue("amqp_vhost")
    return Upstream(
        "rabbitmq",
        5672,
        "amqp://guest:guest@127.0.0.1:{port}/" + vhost,
        "lost the broker connection",
    )


def test_connections_cut_under_load(
    upstream: Upstream,
    rng: random.Random,
    tmp_path: Path,
    project: Callable[[dict[str, str]], Path],
    start_worker: Callable[..., WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    directory, wtasks = load_app(project, tmp_path, broker=upstream.url())
    request.addfinalizer(wtasks.app.close)
    proxy = TcpProxy(upstream.port).start()
    request.addfinalizer(proxy.close)
    sent = publish(wtasks, "late", rng, SENT)
    worker = start_worker(
        directory,
        MODULE,
        "-c",
        str(CONCURRENCY),
        env={"FAULTS_WORKER_BROKER": upstream.url(proxy.port)},
    )
    request.addfinalizer(worker.stop)  # before the proxy goes, even on failure: acks need it
    faults = Faults()

    for _ in range(CUTS):
        run_some_more(directory, rng)
        dropped, at = proxy.cut(hold=rng.uniform(0.2, 1.0))
        assert dropped, "the worker had no connection to cut"
        faults.cut(at)

    runs = settle(directory, sent, faults)
    assert worker.process.poll() is None, worker.output
    assert upstream.reconnect_line in worker.output  # it did see the cuts
    check(f"connection cut x{CUTS}, {upstream.name}, late", "late", runs, sent, faults)
    assert worker.stop() == 0, worker.output
