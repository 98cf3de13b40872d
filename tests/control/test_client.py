"""``Control`` and ``Inspect`` send Celery's commands with Celery's arguments.

A node records every request it runs; the in-process broker carries them. Against
Celery's own client, the same calls are compared in ``test_interop.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac.control import Control, Inspect
from tests.control.conftest import Cluster

NODE = "w1@test"
PATIENCE = 20.0

COMMANDS = [
    "ping", "revoke", "rate_limit", "time_limit", "add_consumer", "cancel_consumer",
    "enable_events", "disable_events", "pool_grow", "pool_shrink", "autoscale", "shutdown",
    "heartbeat", "election", "clock", "active", "reserved", "scheduled", "revoked",
    "registered", "stats", "active_queues", "query_task", "conf", "report", "hello",
]  # fmt: skip

#: (call, the request the node runs): Celery's method names, arguments and defaults.
CONTROL_CALLS: list[tuple[Callable[[Control], Any], str, dict[str, Any]]] = [
    (lambda c: c.ping([NODE]), "ping", {}),
    (
        lambda c: c.revoke("t1", [NODE], reply=True),
        "revoke",
        {"task_id": "t1", "terminate": False, "signal": "SIGTERM"},
    ),
    (
        lambda c: c.revoke(["t1", "t2"], [NODE], terminate=True, signal="SIGKILL", reply=True),
        "revoke",
        {"task_id": ["t1", "t2"], "terminate": True, "signal": "SIGKILL"},
    ),
    (
        lambda c: c.terminate("t1", [NODE], reply=True),
        "revoke",
        {"task_id": "t1", "terminate": True, "signal": "SIGTERM"},
    ),
    (
        lambda c: c.rate_limit("tasks.add", "10/m", [NODE], reply=True),
        "rate_limit",
        {"task_name": "tasks.add", "rate_limit": "10/m"},
    ),
    (
        lambda c: c.time_limit("tasks.add", soft=10, hard=20, destination=[NODE], reply=True),
        "time_limit",
        {"task_name": "tasks.add", "soft": 10, "hard": 20},
    ),
    (
        lambda c: c.add_consumer(
            "q", "ex", routing_key="rk", options={"exclusive": True}, destination=[NODE], reply=True
        ),
        "add_consumer",
        {
            "queue": "q",
            "exchange": "ex",
            "exchange_type": "direct",
            "routing_key": "rk",
            "exclusive": True,
        },
    ),
    (lambda c: c.cancel_consumer("q", [NODE], reply=True), "cancel_consumer", {"queue": "q"}),
    (lambda c: c.enable_events([NODE], reply=True), "enable_events", {}),
    (lambda c: c.disable_events([NODE], reply=True), "disable_events", {}),
    (lambda c: c.pool_grow(2, [NODE], reply=True), "pool_grow", {"n": 2}),
    (lambda c: c.pool_shrink(destination=[NODE], reply=True), "pool_shrink", {"n": 1}),
    (lambda c: c.autoscale(10, 2, [NODE], reply=True), "autoscale", {"max": 10, "min": 2}),
    (lambda c: c.shutdown([NODE], reply=True), "shutdown", {}),
    (lambda c: c.heartbeat([NODE], reply=True), "heartbeat", {}),
]

INSPECT_CALLS: list[tuple[Callable[[Inspect], Any], str, dict[str, Any]]] = [
    (lambda i: i.ping(), "ping", {}),
    (lambda i: i.clock(), "clock", {}),
    (lambda i: i.active(), "active", {"safe": None}),
    (lambda i: i.reserved(), "reserved", {}),
    (lambda i: i.scheduled(), "scheduled", {}),
    (lambda i: i.revoked(), "revoked", {}),
    (lambda i: i.registered("rate_limit"), "registered", {"taskinfoitems": ["rate_limit"]}),
    (lambda i: i.registered_tasks(), "registered", {"taskinfoitems": []}),
    (lambda i: i.stats(), "stats", {}),
    (lambda i: i.active_queues(), "active_queues", {}),
    (lambda i: i.query_task("a", "b"), "query_task", {"ids": ["a", "b"]}),
    (lambda i: i.query_task(["a", "b"]), "query_task", {"ids": ["a", "b"]}),
    (lambda i: i.conf(), "conf", {"with_defaults": False}),
    (lambda i: i.report(), "report", {}),
    (lambda i: i.hello("w2@test", ["t1"]), "hello", {"from_node": "w2@test", "revoked": ["t1"]}),
]


class Recorder:
    """A handler table that records each request and answers ``{"ok": <command>}``."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def handlers(self) -> dict[str, Callable[..., Any]]:
        return {command: self._handler(command) for command in COMMANDS}

    def _handler(self, command: str) -> Callable[..., Any]:
        def handle(**arguments: Any) -> Any:
            self.requests.append((command, arguments))
            return {"ok": command}

        return handle


@pytest.fixture
def recorded(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, Recorder]]:
    cluster = Cluster(f"memory://control-client-{id(request)}")
    recorder = Recorder()
    cluster.node(NODE, recorder.handlers())
    try:
        yield cluster, recorder
    finally:
        cluster.close()


@pytest.mark.parametrize(("call", "command", "arguments"), CONTROL_CALLS)
def test_control_sends_celerys_request(
    recorded: tuple[Cluster, Recorder],
    call: Callable[[Control], Any],
    command: str,
    arguments: dict[str, Any],
) -> None:
    cluster, recorder = recorded

    assert call(cluster.control) == [{NODE: {"ok": command}}]
    assert recorder.requests == [(command, arguments)]


@pytest.mark.parametrize(("call", "command", "arguments"), INSPECT_CALLS)
def test_inspect_sends_celerys_request(
    recorded: tuple[Cluster, Recorder],
    call: Callable[[Inspect], Any],
    command: str,
    arguments: dict[str, Any],
) -> None:
    cluster, recorder = recorded

    assert call(cluster.control.inspect([NODE], timeout=PATIENCE)) == {NODE: {"ok": command}}
    assert recorder.requests == [(command, arguments)]


def test_commands_without_reply_return_none(recorded: tuple[Cluster, Recorder]) -> None:
    cluster, recorder = recorded

    assert cluster.control.revoke("t1") is None
    cluster.control.election("id1", "topic", "action")
    # Requests run in order: once this one is answered, the two before it have run.
    cluster.control.ping([NODE], timeout=PATIENCE)

    assert recorder.requests[:2] == [
        ("revoke", {"task_id": "t1", "terminate": False, "signal": "SIGTERM"}),
        ("election", {"id": "id1", "topic": "topic", "action": "action"}),
    ]


def test_inspect_returns_none_when_nobody_answers(recorded: tuple[Cluster, Recorder]) -> None:
    cluster, _ = recorded

    assert cluster.control.inspect(["ghost@test"], timeout=0.1).ping() is None


def test_destination_must_be_a_list(recorded: tuple[Cluster, Recorder]) -> None:
    cluster, _ = recorded

    with pytest.raises(ValueError, match="list or tuple"):
        cluster.control.broadcast("ping", destination=NODE)


def test_threads_get_their_own_replies(recorded: tuple[Cluster, Recorder]) -> None:
    cluster, _ = recorded
    results: list[Any] = []

    def ping() -> None:
        results.append(cluster.control.ping([NODE], timeout=PATIENCE))
        cluster.control.close()

    threads = [threading.Thread(target=ping) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(PATIENCE)

    assert results == [[{NODE: {"ok": "ping"}}]] * 4


def test_a_given_connection_is_used(recorded: tuple[Cluster, Recorder]) -> None:
    cluster, _ = recorded
    transport = cluster.transport()

    replies = cluster.control.ping([NODE], timeout=PATIENCE, connection=transport)

    assert replies == [{NODE: {"ok": "ping"}}]
