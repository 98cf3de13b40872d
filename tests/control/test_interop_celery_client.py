"""A real Celery 5 client controls a celeriac node, on Redis and RabbitMQ.

The node runs in a thread of the test with a table of commands that records what it was
asked; Celery's client (kombu's mailbox) and celeriac's make the same calls, and the node
must see the same requests and both must read the same replies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.control.conftest import Cluster, pong, url_of
from tests.control.test_client import Recorder

celery = pytest.importorskip("celery")

pytestmark = [pytest.mark.celery]

NODE = "celeriac-node@test"
PATIENCE = 20.0

BROKERS = [
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("amqp", id="amqp", marks=pytest.mark.amqp),
]

#: Control commands called alike on both clients: (method, positional, keyword arguments).
CONTROL_CALLS = [
    ("ping", (), {}),
    ("revoke", ("t1",), {}),
    ("revoke", (["t1", "t2"],), {"terminate": True, "signal": "SIGKILL"}),
    ("terminate", ("t1",), {}),
    ("rate_limit", ("tasks.add", "10/m"), {}),
    ("time_limit", ("tasks.add",), {"soft": 10, "hard": 20}),
    ("add_consumer", ("q",), {"exchange": "ex", "routing_key": "rk", "options": {"x": 1}}),
    ("cancel_consumer", ("q",), {}),
    ("enable_events", (), {}),
    ("disable_events", (), {}),
    ("pool_grow", (2,), {}),
    ("pool_shrink", (), {}),
    ("autoscale", (10, 2), {}),
    ("shutdown", (), {}),
    ("heartbeat", (), {}),
]

INSPECT_CALLS = [
    ("ping", ()),
    ("clock", ()),
    ("active", ()),
    ("reserved", ()),
    ("scheduled", ()),
    ("revoked", ()),
    ("registered", ("rate_limit",)),
    ("stats", ()),
    ("active_queues", ()),
    ("query_task", ("a", "b")),
    ("conf", ()),
    ("report", ()),
]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_of(request.param, request, tmp_path)


@pytest.fixture
def cluster(broker: str) -> Iterator[Cluster]:
    cluster = Cluster(broker, namespace="celery")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def celery_app(broker: str) -> Iterator[Any]:
    app = celery.Celery("celery-client", broker=broker, set_as_current=False)
    try:
        yield app
    finally:
        app.close()


def test_celery_pings_a_celeriac_node(cluster: Cluster, celery_app: Any) -> None:
    cluster.node(NODE, {"ping": pong})

    assert celery_app.control.inspect().ping() == {NODE: {"ok": "pong"}}
    replies = celery_app.control.broadcast("ping", reply=True, destination=[NODE], timeout=PATIENCE)
    assert replies == [{NODE: {"ok": "pong"}}]


@pytest.mark.parametrize(("pattern", "matcher"), [("celeriac-*", "glob"), ("^celeriac-", "pcre")])
def test_celerys_pattern_reaches_the_node(
    cluster: Cluster, celery_app: Any, pattern: str, matcher: str
) -> None:
    cluster.node(NODE, {"ping": pong})
    cluster.node("other@test", {"ping": pong})

    inspect = celery_app.control.inspect(pattern=pattern, matcher=matcher, limit=1)
    assert inspect.ping() == {NODE: {"ok": "pong"}}


@pytest.mark.parametrize(("method", "args", "kwargs"), CONTROL_CALLS)
def test_both_clients_send_the_same_control_request(
    cluster: Cluster, celery_app: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    recorder = Recorder()
    cluster.node(NODE, recorder.handlers())
    options = {"destination": [NODE], "reply": True, "timeout": PATIENCE}
    if method == "ping":
        del options["reply"]

    from_celery = getattr(celery_app.control, method)(*args, **kwargs, **options)
    from_celeriac = getattr(cluster.control, method)(*args, **kwargs, **options)

    assert from_celery == from_celeriac == [{NODE: {"ok": recorder.requests[0][0]}}]
    assert recorder.requests[0] == recorder.requests[1]


@pytest.mark.parametrize(("method", "args"), INSPECT_CALLS)
def test_both_clients_send_the_same_inspect_request(
    cluster: Cluster, celery_app: Any, method: str, args: tuple[Any, ...]
) -> None:
    recorder = Recorder()
    cluster.node(NODE, recorder.handlers())

    celery_inspect = celery_app.control.inspect(destination=[NODE], timeout=PATIENCE)
    from_celery = getattr(celery_inspect, method)(*args)
    from_celeriac = getattr(cluster.control.inspect([NODE], timeout=PATIENCE), method)(*args)

    assert from_celery == from_celeriac == {NODE: {"ok": recorder.requests[0][0]}}
    assert recorder.requests[0] == recorder.requests[1]
