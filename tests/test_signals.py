"""Signals: connecting, sender filters, weak references, dispatch_uid, robustness, and the
publish signals a client sends."""

from __future__ import annotations

import gc
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, signals
from celeriac.app import current as app_current
from celeriac.signals import Signal

_names = itertools.count()


@pytest.fixture(autouse=True)
def _restore_current_app() -> Iterator[None]:
    before = app_current._current_app
    yield
    app_current._current_app = before


def test_connect_send_and_disconnect() -> None:
    signal = Signal("test")
    calls: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "answer"

    signal.connect(receiver)
    assert signal.has_listeners()
    responses = signal.send(sender="me", value=1)
    assert responses == [(receiver, "answer")]
    assert calls == [{"signal": signal, "sender": "me", "value": 1}]
    assert signal.disconnect(receiver) is True
    assert signal.disconnect(receiver) is False
    assert signal.send(sender="me") == []
    assert not signal.has_listeners()


def test_connecting_twice_calls_once() -> None:
    signal = Signal("twice")
    calls: list[int] = []

    def receiver(**kwargs: Any) -> None:
        calls.append(1)

    signal.connect(receiver)
    signal.connect(receiver)
    signal.send()
    assert calls == [1]


def test_sender_filtering() -> None:
    signal = Signal("filtered")
    heard: list[Any] = []

    class Sender:
        name = "named.sender"

    specific = Sender()

    def for_specific(sender: Any, **kwargs: Any) -> None:
        heard.append(("specific", sender))

    def for_name(sender: Any, **kwargs: Any) -> None:
        heard.append(("name", sender))

    def for_all(sender: Any, **kwargs: Any) -> None:
        heard.append(("all", sender))

    signal.connect(for_specific, sender=specific)
    # A string built at run time: equal but not the same object as the one sent.
    signal.connect(for_name, sender="".join(["named.", "sender"]))
    signal.connect(for_all)
    signal.send(sender=specific)
    assert heard == [("specific", specific), ("name", specific), ("all", specific)]
    heard.clear()
    signal.send(sender="named.sender")
    assert heard == [
        ("specific", "named.sender"),
        ("name", "named.sender"),
        ("all", "named.sender"),
    ]
    heard.clear()
    signal.send(sender=Sender)  # the class has the name too
    signal.send(sender="other")
    assert ("all", "other") in heard
    assert all(entry[1] != "other" for entry in heard if entry[0] != "all")


def test_disconnect_with_sender_only_removes_that_connection() -> None:
    signal = Signal("per-sender")
    calls: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    signal.connect(receiver, sender="a")
    signal.connect(receiver, sender="b")
    signal.disconnect(receiver, sender="a")
    signal.send(sender="a")
    signal.send(sender="b")
    assert calls == ["b"]


def test_weak_references_let_receivers_go() -> None:
    signal = Signal("weak")
    calls: list[str] = []

    def make_receiver(label: str) -> Any:
        def receiver(**kwargs: Any) -> None:
            calls.append(label)

        return receiver

    temporary = make_receiver("temporary")
    signal.connect(temporary)
    kept = make_receiver("kept")
    signal.connect(kept, weak=False)
    del temporary
    gc.collect()
    signal.send()
    assert calls == ["kept"]
    assert len(signal.receivers) == 1
    # A new receiver that happens to reuse the collected one's id is still connected.
    for index in range(50):
        fresh = make_receiver(f"fresh{index}")
        signal.connect(fresh)
        calls.clear()
        signal.send()
        assert f"fresh{index}" in calls
        del fresh
        gc.collect()
    assert signal.receivers == [kept]


def test_bound_methods_are_held_weakly() -> None:
    signal = Signal("methods")
    calls: list[int] = []

    class Listener:
        def on_signal(self, **kwargs: Any) -> None:
            calls.append(id(self))

    listener = Listener()
    signal.connect(listener.on_signal)
    signal.send()
    assert calls == [id(listener)]
    del listener
    gc.collect()
    signal.send()
    assert len(calls) == 1
    assert not signal.has_listeners()


def test_dispatch_uid_prevents_duplicates_and_disconnects() -> None:
    signal = Signal("uid")
    calls: list[str] = []

    def first(**kwargs: Any) -> None:
        calls.append("first")

    def second(**kwargs: Any) -> None:
        calls.append("second")

    signal.connect(first, dispatch_uid="only-one")
    signal.connect(second, dispatch_uid="only-one")
    signal.send()
    assert calls == ["first"]
    assert signal.disconnect(dispatch_uid="only-one") is True
    calls.clear()
    signal.send()
    assert calls == []


def test_decorator_forms() -> None:
    signal = Signal("decorated")
    calls: list[str] = []

    @signal.connect
    def bare(**kwargs: Any) -> None:
        calls.append("bare")

    @signal.connect(sender="s")
    def with_sender(**kwargs: Any) -> None:
        calls.append("with_sender")

    @signal.connect(weak=False, dispatch_uid="strong")
    def strong(**kwargs: Any) -> None:
        calls.append("strong")

    assert callable(bare) and callable(with_sender) and callable(strong)
    signal.send(sender="s")
    assert calls == ["bare", "with_sender", "strong"]
    calls.clear()
    signal.send(sender="other")
    assert calls == ["bare", "strong"]


def test_a_failing_receiver_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    signal = Signal("robust")
    calls: list[str] = []

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    def healthy(**kwargs: Any) -> None:
        calls.append("healthy")

    signal.connect(broken)
    signal.connect(healthy)
    with caplog.at_level(logging.ERROR, logger="celeriac.signals"):
        responses = signal.send(sender=None)
    assert calls == ["healthy"]
    assert isinstance(responses[0][1], RuntimeError)
    assert "receiver bug" in caplog.text
    assert signal.send_robust(sender=None)[0][0] is broken


def test_a_receiver_that_disconnects_itself_while_sending() -> None:
    signal = Signal("self-removing")
    calls: list[str] = []

    def once(**kwargs: Any) -> None:
        calls.append("once")
        signal.disconnect(once)

    def always(**kwargs: Any) -> None:
        calls.append("always")

    signal.connect(once)
    signal.connect(always)
    signal.send()
    signal.send()
    assert calls == ["once", "always", "always"]


def test_every_celery_signal_exists() -> None:
    names = [
        "before_task_publish",
        "after_task_publish",
        "task_received",
        "task_prerun",
        "task_postrun",
        "task_success",
        "task_retry",
        "task_failure",
        "task_internal_error",
        "task_revoked",
        "task_rejected",
        "task_unknown",
        "import_modules",
        "celeryd_init",
        "celeryd_after_setup",
        "worker_init",
        "worker_process_init",
        "worker_process_shutdown",
        "worker_ready",
        "worker_shutdown",
        "worker_shutting_down",
        "heartbeat_sent",
        "setup_logging",
        "after_setup_logger",
        "after_setup_task_logger",
        "beat_init",
        "beat_embedded_init",
        "user_preload_options",
    ]
    for name in names:
        signal = getattr(signals, name)
        assert isinstance(signal, Signal) and signal.name == name
        assert name in signals.__all__


def test_publish_signals_carry_what_celery_gives(project: Any = None) -> None:
    app = Celery("signals", broker=f"memory://signals-{next(_names)}", backend="memory://")

    @app.task
    def add(x: int, y: int) -> int:
        return x + y

    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []

    def on_before(sender: Any, **kwargs: Any) -> None:
        kwargs["headers"]["traceparent"] = "00-trace"  # tracing libraries inject headers
        before.append({"sender": sender, **kwargs})

    def on_after(sender: Any, **kwargs: Any) -> None:
        after.append({"sender": sender, **kwargs})

    signals.before_task_publish.connect(on_before, sender=add.name)
    signals.after_task_publish.connect(on_after, sender=add)
    try:
        result = add.delay(1, 2)
        app.send_task("not.add", ())
    finally:
        signals.before_task_publish.disconnect(on_before, sender=add.name)
        signals.after_task_publish.disconnect(on_after, sender=add)
    assert len(before) == 1 and len(after) == 1
    event = before[0]
    assert event["sender"] == add.name
    assert event["body"] == ((1, 2), {}, event["body"][2])
    assert event["headers"]["id"] == result.id
    assert (event["exchange"], event["routing_key"]) == ("", "celery")
    assert event["properties"]["correlation_id"] == result.id
    assert [queue.name for queue in event["declare"]] == ["celery"]
    assert after[0]["headers"]["id"] == result.id
    transport = app.create_transport()
    deliveries = transport.fetch(["celery"], 10, 0.05)
    transport.close()
    assert deliveries[0].envelope.headers["traceparent"] == "00-trace"
