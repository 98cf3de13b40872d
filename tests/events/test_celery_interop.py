"""Events between celeriac and real Celery on one broker, both ways, on Redis and RabbitMQ.

Celery's side runs in this process: its ``EventReceiver`` (kombu) in a thread feeding its
own ``celery.events.state.State``, and its ``EventDispatcher``. celeriac's side declares the
event exchange first, so that Celery's declare of the same (durable topic) exchange would
fail if celeriac's were declared otherwise.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac.events import EventReceiver, standard
from celeriac.events.message import utcoffset
from tests.events.conftest import Broker

celery = pytest.importorskip("celery")
from celery.utils.time import utcoffset as celery_utcoffset  # noqa: E402
from celery.worker.state import SOFTWARE_INFO  # noqa: E402

pytestmark = pytest.mark.celery

TIMEOUT = 15.0


@pytest.fixture(
    params=[
        pytest.param("redis_url", id="redis", marks=pytest.mark.redis),
        pytest.param("amqp_url", id="amqp", marks=pytest.mark.amqp),
    ]
)
def peer_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    broker = Broker(request.getfixturevalue(request.param))
    try:
        yield broker
    finally:
        broker.close()


class CeleryMonitor:
    """Celery's event receiver in a thread, feeding Celery's cluster state."""

    def __init__(self, broker_url: str) -> None:
        self.app = celery.Celery("events_peer", broker=broker_url, set_as_current=False)
        self.state = self.app.events.State()
        self.events: list[dict[str, Any]] = []
        self.changed = threading.Condition()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.receiver: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(TIMEOUT), "Celery's receiver did not start"

    def _run(self) -> None:
        try:
            with self.app.connection_for_read() as connection:
                self.receiver = self.app.events.Receiver(connection, handlers={"*": self._on})
                self.ready.set()
                self.receiver.capture(limit=None, timeout=None, wakeup=False)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def _on(self, event: dict[str, Any]) -> None:
        self.state.event(event)
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, found: Callable[[], bool], poke: Callable[[], None]) -> None:
        """Until ``found()``; ``poke()`` meanwhile (Redis Pub/Sub drops what is published
        before kombu's first read subscribes, so the first events may need sending again)."""
        deadline = time.monotonic() + TIMEOUT
        with self.changed:
            while not found():
                assert self.error is None, self.error
                assert time.monotonic() < deadline, f"Celery saw only {self.events}"
                poke()
                self.changed.wait(0.2)

    def close(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(TIMEOUT)
        self.app.close()


def test_utcoffset_is_celerys() -> None:
    assert utcoffset() == celery_utcoffset()


def test_celery_reads_celeriac_events_into_its_state(peer_broker: Broker) -> None:
    celeriac_receiver = peer_broker.receiver()  # celeriac declares the exchange first
    dispatcher = peer_broker.dispatcher("celeriac@peer", buffer_group=["task"])
    monitor = CeleryMonitor(peer_broker.url)
    try:

        def heartbeat() -> None:
            dispatcher.dispatch(standard.worker_heartbeat(freq=2.0, active=1, processed=7))

        monitor.wait_for(lambda: "celeriac@peer" in monitor.state.workers, heartbeat)
        dispatcher.dispatch(
            standard.task_received("t-ok", "proj.add", args="(2, 2)", kwargs="{}", retries=0)
        )
        dispatcher.dispatch(standard.task_started("t-ok"))
        dispatcher.dispatch(standard.task_succeeded("t-ok", standard.result_repr(4), 0.25))
        dispatcher.dispatch(standard.task_received("t-bad", "proj.fail", args="()", kwargs="{}"))
        dispatcher.dispatch(standard.task_failed("t-bad", ValueError("no"), "Traceback (...)"))
        dispatcher.flush()  # one task.multi message
        monitor.wait_for(lambda: len(monitor.state.tasks) == 2, lambda: None)
        monitor.wait_for(lambda: monitor.state.tasks["t-bad"].state == "FAILURE", lambda: None)
    finally:
        monitor.close()
        dispatcher.close()
        celeriac_receiver.close()

    worker = monitor.state.workers["celeriac@peer"]
    assert worker.alive
    assert (worker.freq, worker.active, worker.processed) == (2.0, 1, 7)
    assert worker.sw_ident == "py-celeriac"
    ok, bad = monitor.state.tasks["t-ok"], monitor.state.tasks["t-bad"]
    assert (ok.state, ok.name, ok.args, ok.result, ok.runtime) == (
        "SUCCESS",
        "proj.add",
        "(2, 2)",
        "4",
        0.25,
    )
    assert ok.worker.hostname == "celeriac@peer"
    assert (bad.state, bad.exception) == ("FAILURE", "ValueError('no')")
    multi = [e for e in monitor.events if e["type"].startswith("task-")]
    assert [e["type"] for e in multi] == [
        "task-received",
        "task-started",
        "task-succeeded",
        "task-received",
        "task-failed",
    ]


def test_celeriac_reads_celery_events(peer_broker: Broker) -> None:
    from celeriac.events import State

    state = State()
    received: list[dict[str, Any]] = []

    def handle(event: dict[str, Any]) -> None:
        received.append(event)
        state.event(event)

    receiver: EventReceiver = peer_broker.receiver({"*": handle})
    app = celery.Celery("events_peer", broker=peer_broker.url, set_as_current=False)
    try:
        with (
            app.connection_for_write() as connection,
            app.events.Dispatcher(connection, hostname="celery@peer", buffer_group={"task"}) as d,
        ):
            online = {"freq": 2.0, "active": 0, "processed": 0, "loadavg": [0.5, 0.4, 0.3]}
            d.send("worker-online", **online, **SOFTWARE_INFO)
            d.send("task-received", uuid="c1", name="proj.add", args="(1, 1)", kwargs="{}")
            d.send("task-started", uuid="c1")
            d.send("task-succeeded", uuid="c1", result="2", runtime=0.5)
            d.flush()
            receiver.capture(limit=4, timeout=TIMEOUT)
    finally:
        app.close()
        receiver.close()

    assert [event["type"] for event in received] == [
        "worker-online",
        "task-received",
        "task-started",
        "task-succeeded",
    ]
    assert all(event["hostname"] == "celery@peer" for event in received)
    worker = state.workers["celery@peer"]
    assert worker.alive and worker.sw_ident == "py-celery" and worker.loadavg == [0.5, 0.4, 0.3]
    task = state.tasks["c1"]
    assert (task.state, task.name, task.result, task.runtime, task.worker) == (
        "SUCCESS",
        "proj.add",
        "2",
        0.5,
        "celery@peer",
    )
