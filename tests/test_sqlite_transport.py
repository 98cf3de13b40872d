"""What only the SQLite transport promises, beyond the conformance suite.

URLs, the database settings, holder lock files, fork safety and large batches.
"""

from __future__ import annotations

import fcntl
import gc
import multiprocessing
import os
import sqlite3
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Envelope
from celeriac.transports import create_transport
from celeriac.transports.sqlite import SQLiteTransport
from celeriac.wire.queues import Delivery, QueueSpec
from celeriac.wire.sqlite import database_path

fork = multiprocessing.get_context("fork")


def message(queue: str, number: int, priority: int = 0, exchange: str = "") -> Envelope:
    return Envelope(
        f"body-{number}".encode(), {"n": number}, {"priority": priority}, "application/json",
        "utf-8", exchange, queue,
    )  # fmt: skip


def numbers(deliveries: list[Delivery]) -> list[int]:
    return [delivery.envelope.headers["n"] for delivery in deliveries]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/broker.db"


@pytest.fixture
def broker(url: str) -> Iterator[SQLiteTransport]:
    transport = SQLiteTransport(url)
    yield transport
    transport.close()


def db_path(url: str) -> Path:
    return database_path(url, "broker_url")


def holder_files(url: str) -> list[str]:
    directory = Path(db_path(url).as_posix() + ".holders")
    return sorted(os.listdir(directory)) if directory.exists() else []


# -- URLs and the database ----------------------------------------------------------------


def test_relative_and_absolute_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    relative = create_transport("sqlite:///data/relative.db")
    absolute = create_transport(f"sqlite:///{tmp_path}/absolute.db")
    try:
        assert isinstance(relative, SQLiteTransport)
        assert isinstance(absolute, SQLiteTransport)
        assert relative.path == tmp_path / "data" / "relative.db"
        assert absolute.path == tmp_path / "absolute.db"
        assert (tmp_path / "data" / "relative.db").exists()
    finally:
        relative.close()
        absolute.close()


def test_a_symlinked_path_shares_the_holders_of_the_real_one(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    direct = SQLiteTransport(f"sqlite:///{tmp_path}/real/broker.db")
    linked = SQLiteTransport(f"sqlite:///{tmp_path}/link/broker.db")
    try:
        direct.publish([message("q", 1)])
        held = linked.fetch(["q"], 1, 1.0)

        assert linked.path == direct.path
        assert direct.restore_dead_holders() == 0  # finds the live holder's lock file
        assert len(held) == 1
    finally:
        direct.close()
        linked.close()


@pytest.mark.parametrize("bad_url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_url_without_a_file_is_refused_clearly(bad_url: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="names no database file"):
        SQLiteTransport(bad_url)


def test_database_is_wal_with_the_current_schema(broker: SQLiteTransport, url: str) -> None:
    again = SQLiteTransport(url)  # a second open finds the schema and changes nothing
    again.close()

    with sqlite3.connect(broker.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"messages", "exchanges", "bindings", "messages_ready", "messages_held"} <= tables


def test_a_newer_schema_is_refused(url: str, tmp_path: Path) -> None:
    SQLiteTransport(url).close()
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        conn.execute("PRAGMA user_version=99")

    with pytest.raises(ImproperlyConfigured, match="newer celeriac"):
        SQLiteTransport(url)


def _create_and_publish(url: str, queue: str, start: int) -> None:
    transport = SQLiteTransport(url)
    transport.publish([message(queue, number) for number in range(start, start + 50)])
    transport.close()


def test_processes_creating_a_new_database_together(url: str) -> None:
    children = [
        fork.Process(target=_create_and_publish, args=(url, "q", start))
        for start in range(0, 200, 50)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)

    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    reader = SQLiteTransport(url)
    try:
        assert reader.size("q") == 200
    finally:
        reader.close()


def test_used_after_close_raises(url: str) -> None:
    transport = SQLiteTransport(url)
    transport.close()
    transport.close()  # idempotent

    with pytest.raises(RuntimeError, match="is closed"):
        transport.fetch(["q"], 1, 0)


def test_close_ends_a_fetch_waiting_in_another_thread(url: str) -> None:
    transport = SQLiteTransport(url)
    results: list[list[Delivery]] = []
    waiter = threading.Thread(target=lambda: results.append(transport.fetch(["q"], 1, 30.0)))
    waiter.start()
    transport.fetch(["other"], 1, 0)  # usable from this thread while the other one waits

    transport.close()
    waiter.join(10.0)

    assert not waiter.is_alive()
    assert results == [[]]


# -- routing and batches ------------------------------------------------------------------


def test_several_queues_are_served_by_priority_then_age(broker: SQLiteTransport) -> None:
    broker.publish([message("a", 0), message("b", 1, priority=5), message("a", 2, priority=5)])
    broker.publish([message("b", 3)])

    deliveries = broker.fetch(["a", "b"], 10, 1.0)

    assert numbers(deliveries) == [1, 2, 0, 3]
    assert [d.queue for d in deliveries] == ["b", "a", "a", "b"]


def test_undeclared_exchange_routes_nowhere(broker: SQLiteTransport) -> None:
    broker.publish([message("q", 1, exchange="nobody-declared-me")])

    assert broker.size("q") == 0


def test_exchanges_declared_by_another_process_route_here(
    broker: SQLiteTransport, url: str
) -> None:
    declarer = SQLiteTransport(url)
    declarer.declare([QueueSpec("events", exchange="ev", exchange_type="topic", routing_key="#")])
    declarer.close()

    broker.publish([message("task.succeeded", 1, exchange="ev")])

    assert numbers(broker.fetch(["events"], 10, 1.0)) == [1]


def test_batches_larger_than_one_statement_settle_together(broker: SQLiteTransport) -> None:
    broker.publish([message("big", number) for number in range(1300)])
    deliveries = broker.fetch(["big"], 1300, 1.0)
    assert len(deliveries) == 1300

    broker.reject(deliveries[:1200], requeue=True)
    broker.ack(deliveries[1200:])
    again = broker.fetch(["big"], 2000, 1.0)

    assert numbers(again) == list(range(1200))
    assert all(delivery.redelivered for delivery in again)
    broker.ack(again)
    assert broker.size("big") == 0


def test_an_empty_look_is_remembered_per_queue_and_forgotten_on_own_writes(
    broker: SQLiteTransport, url: str
) -> None:
    other = SQLiteTransport(url)
    other.publish([message("b", 1)])
    other.close()

    assert broker.fetch(["a"], 1, 0) == []
    [from_b] = broker.fetch(["b"], 1, 0)  # nothing changed since, but it is another queue
    assert broker.fetch(["b"], 1, 0) == []
    broker.reject([from_b], requeue=True)
    assert numbers(broker.fetch(["b"], 1, 0)) == [1]
    assert broker.fetch(["a"], 1, 0) == []
    broker.publish([message("a", 2)])
    assert numbers(broker.fetch(["a"], 1, 0)) == [2]


def test_message_ids_are_never_reused(broker: SQLiteTransport) -> None:
    broker.publish([message("q", 1)])
    [first] = broker.fetch(["q"], 1, 1.0)
    broker.ack([first])
    broker.publish([message("q", 2)])
    [second] = broker.fetch(["q"], 1, 1.0)

    broker.ack([first])  # a late duplicate ack must not touch the new message

    assert second.tag != first.tag
    broker.reject([second], requeue=True)
    assert numbers(broker.fetch(["q"], 1, 1.0)) == [2]


# -- holders ------------------------------------------------------------------------------


def test_only_consumers_hold_a_lock_file_and_close_removes_it(
    broker: SQLiteTransport, url: str
) -> None:
    broker.publish([message("q", 1)])
    assert holder_files(url) == []

    consumer = SQLiteTransport(url)
    consumer.fetch(["q"], 1, 1.0)
    [lock_file] = holder_files(url)
    lock_path = Path(db_path(url).as_posix() + ".holders") / lock_file
    assert lock_path.read_text() == f"{os.getpid()}\n"

    consumer.close()

    assert holder_files(url) == []
    [back] = broker.fetch(["q"], 1, 1.0)
    assert back.redelivered


def test_rows_of_a_holder_without_a_lock_file_come_back(broker: SQLiteTransport) -> None:
    broker.publish([message("q", 1)])
    with sqlite3.connect(broker.path) as conn:  # as if its process died and the file went
        conn.execute("UPDATE messages SET holder = 12345")

    assert broker.size("q") == 0
    assert broker.restore_dead_holders() == 1
    [back] = broker.fetch(["q"], 1, 1.0)
    assert back.redelivered


def test_a_collected_holder_lets_its_messages_go(broker: SQLiteTransport, url: str) -> None:
    broker.publish([message("q", 1)])

    def hold_and_forget() -> None:
        forgetful = SQLiteTransport(url)
        assert len(forgetful.fetch(["q"], 1, 1.0)) == 1

    hold_and_forget()
    gc.collect()

    [back] = broker.fetch(["q"], 1, 5.0)
    assert back.redelivered


def test_sweep_removes_only_abandoned_temporary_lock_files(
    broker: SQLiteTransport, url: str
) -> None:
    broker.fetch(["q"], 1, 0)  # registers, so the directory exists
    directory = Path(db_path(url).as_posix() + ".holders")
    abandoned = directory / ".new-1"
    abandoned.touch()
    in_use = directory / ".new-2"
    in_use.touch()
    with open(in_use) as in_use_file:
        fcntl.flock(in_use_file, fcntl.LOCK_EX)
        broker.restore_dead_holders()

        assert not abandoned.exists()
        assert in_use.exists()


# -- fork safety --------------------------------------------------------------------------


def _use_inherited(holder: SQLiteTransport, report: Connection) -> None:
    try:
        holder.fetch(["q"], 1, 0)
    except RuntimeError as exc:
        report.send(str(exc))
    holder.close()  # must not requeue what the parent holds


def test_a_forked_child_cannot_use_or_close_its_parents_transport(
    broker: SQLiteTransport, url: str
) -> None:
    broker.publish([message("q", number) for number in range(2)])
    holder = SQLiteTransport(url)
    held = holder.fetch(["q"], 2, 1.0)
    receive, send = fork.Pipe(duplex=False)

    child = fork.Process(target=_use_inherited, args=(holder, send))
    child.start()
    error = receive.recv()
    child.join(30)

    assert child.exitcode == 0
    assert "cannot be used after fork()" in error
    assert broker.size("q") == 0  # still held by the parent
    assert len(holder_files(url)) == 1
    holder.ack(held)
    holder.close()
    assert broker.fetch(["q"], 10, 0.2) == []


def _hold_then_die_leaving_a_forked_child(
    url: str, report: Connection, release: Connection
) -> None:
    holder = SQLiteTransport(url)
    held = holder.fetch(["q"], 3, 5.0)
    if os.fork() == 0:  # the grandchild outlives us with copies of our descriptors
        try:
            report.send(("grandchild", os.getpid()))
            release.recv()
        finally:
            os._exit(0)
    report.send(("held", numbers(held)))
    os._exit(0)  # dies holding: no ack, no close


def test_a_dead_parents_messages_return_while_its_forked_child_lives(
    broker: SQLiteTransport, url: str
) -> None:
    broker.publish([message("q", number) for number in range(3)])
    receive, send = fork.Pipe(duplex=False)
    wait_here, release = fork.Pipe(duplex=False)

    parent = os.fork()  # not multiprocessing: its join() would wait for the grandchild too
    if parent == 0:
        try:
            _hold_then_die_leaving_a_forked_child(url, send, wait_here)
        finally:
            os._exit(1)
    reports = dict([receive.recv(), receive.recv()])
    _, status = os.waitpid(parent, 0)

    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert reports["held"] == [0, 1, 2]
        back = broker.fetch(["q"], 10, 5.0)
        os.kill(reports["grandchild"], 0)  # still alive, and the messages came back anyway
        assert numbers(back) == [0, 1, 2]
        assert all(delivery.redelivered for delivery in back)
    finally:
        release.send("done")


def test_a_row_that_does_not_decode_moves_to_the_dead_letter_queue_as_it_is(
    broker: SQLiteTransport, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    broker.publish([message("q", 1), message("q", 2)])
    with sqlite3.connect(db_path(url)) as db:  # written by something else, not celeriac
        db.execute("UPDATE messages SET meta = ? WHERE id = 1", (b"\xff not a meta",))

    assert numbers(broker.fetch(["q"], 10, 1.0)) == [2]

    with sqlite3.connect(db_path(url)) as db:
        rows = db.execute("SELECT queue, holder, meta FROM messages WHERE id = 1").fetchall()
    assert rows == [("q.dead", None, b"\xff not a meta")]
    [line] = [record.getMessage() for record in caplog.records if "Dead-lettered" in record.message]
    assert "row 1" in line and "'q.dead'" in line
