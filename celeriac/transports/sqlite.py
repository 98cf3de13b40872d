"""The embedded default broker: one SQLite file shared by clients and workers on one machine.

``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (SQLAlchemy's slashes).

Concurrency: WAL journal, ``synchronous=NORMAL``, a busy timeout, and short transactions;
every write takes the write lock up front (``BEGIN IMMEDIATE`` or a single statement), so
concurrent writers queue instead of failing. Batches move in one statement each: publish is
one ``executemany``, fetch one ``UPDATE … RETURNING``, ack one ``DELETE``.

At-least-once without timeouts: a transport that fetches registers as a *holder* and keeps
an exclusive ``flock`` on its own lock file (``<db>.holders/<holder>.lock``) for as long as
it lives. Reserved rows carry the holder id. The kernel drops the lock when the process
dies, so any consumer can tell a dead holder from a busy one by trying to take its lock: at
most about once a second each consumer returns the rows of dead holders to their queues
(``redelivered``). A message held for hours (a long task, an ETA) is never redelivered
while its holder lives. Lock files must live on a local filesystem (``flock`` semantics).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.message import Envelope
from celeriac.transports.base import (
    BrokerStorageFull,
    Capabilities,
    TransportOptions,
    dead_letter_by_publishing,
    log_dead_letter,
)
from celeriac.wire.envelopes import decode_envelope, encode_meta
from celeriac.wire.queues import Delivery, QueueSpec, bound_queues
from celeriac.wire.sqlite import abandon_in_forked_child, connect, database_path

SCHEMA_VERSION = 1

_SCHEMA = (
    # AUTOINCREMENT: an id is never reused, so a late second ack cannot hit a newer message.
    # It writes one more page per commit (about 20% on one-message publishes, measured;
    # batches amortize it), a fair price for never losing a message to a stale tag.
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        queue TEXT NOT NULL,
        priority INTEGER NOT NULL,
        holder INTEGER,
        redelivered INTEGER NOT NULL DEFAULT 0,
        body BLOB NOT NULL,
        meta BLOB NOT NULL
    )""",
    # Fetch walks this index in delivery order; reserving a row takes it out of the index.
    """CREATE INDEX IF NOT EXISTS messages_ready
        ON messages (queue, priority DESC, id) WHERE holder IS NULL""",
    """CREATE INDEX IF NOT EXISTS messages_held ON messages (holder) WHERE holder IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS exchanges (
        name TEXT PRIMARY KEY, type TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS bindings (
        exchange TEXT NOT NULL, binding_key TEXT NOT NULL, queue TEXT NOT NULL,
        PRIMARY KEY (exchange, binding_key, queue)
    ) WITHOUT ROWID""",
)

_INSERT = "INSERT INTO messages (queue, priority, body, meta) VALUES (?, ?, ?, ?)"
#: A held row that does not decode goes to ``<queue>.dead`` as it is (``dead_letter_queue``).
_MOVE_TO_DEAD = "UPDATE messages SET holder = NULL, queue = queue || '.dead'"
_RETURNING = " RETURNING id, queue, priority, redelivered, body, meta"
#: A row as ``_RETURNING`` gives it.
_Row = tuple[int, str, int, int, bytes, bytes]
#: Ids per ``IN (…)`` list; far below SQLite's limit on bound parameters.
_IDS_PER_STATEMENT = 500

_DEFAULT_BUSY_TIMEOUT = 10.0
#: Sleep between checks for new messages while a fetch waits: short while messages have been
#: flowing (round-trip latency), longer once the consumer has been idle for a second.
_DEFAULT_POLLING_INTERVAL = 0.002
_IDLE_POLLING_INTERVAL = 0.005
#: How often a consumer looks for dead holders.
_DEFAULT_RESTORE_INTERVAL = 1.0


class _HolderLock:
    """This transport's lock file; holding the ``flock`` is what says "I am alive"."""

    def __init__(self, holder: int, fd: int, path: Path) -> None:
        self.holder = holder
        self.fd = fd
        self.path = path

    def release(self, remove: bool) -> None:
        """Drop the lock (idempotent); ``remove`` the file too, while still holding the lock."""
        if remove:
            self.path.unlink(missing_ok=True)
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _HolderDirectory:
    """The directory of holders' lock files next to the database."""

    _NEW_PREFIX = ".new-"

    def __init__(self, path: Path) -> None:
        self.path = path

    def lock_path(self, holder: int) -> Path:
        return self.path / f"{holder}.lock"

    def register(self) -> _HolderLock:
        """Create and lock a new holder's file.

        The file is locked under a temporary name and then renamed, so a file under a final
        name is always locked by its creator until it dies or closes: another consumer that
        finds it unlocked knows the holder is gone.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        while True:
            holder = secrets.randbits(62) + 1
            new_path = self.path / f"{self._NEW_PREFIX}{holder}"
            fd = os.open(new_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.write(fd, f"{os.getpid()}\n".encode())  # for people looking at the directory
                os.rename(new_path, self.lock_path(holder))
            except (BlockingIOError, FileNotFoundError):
                # A consumer sweeping abandoned temporary files took this one: try another.
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return _HolderLock(holder, fd, self.lock_path(holder))

    def listed(self) -> set[int]:
        """Holders that have a lock file; abandoned temporary files are removed on the way."""
        holders: set[int] = set()
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return holders
        for name in names:
            if name.endswith(".lock") and name[:-5].isdigit():
                holders.add(int(name[:-5]))
            elif name.startswith(self._NEW_PREFIX):
                self._remove_if_unlocked(self.path / name)
        return holders

    def take_dead(self, holders: Iterable[int]) -> list[_HolderLock]:
        """Lock the files of the holders that are gone; a missing file also means gone."""
        dead: list[_HolderLock] = []
        for holder in holders:
            path = self.lock_path(holder)
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                dead.append(_HolderLock(holder, -1, path))
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # alive: its process still holds the lock
                continue
            dead.append(_HolderLock(holder, fd, path))
        return dead

    def _remove_if_unlocked(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink(missing_ok=True)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)


# -- fork safety -------------------------------------------------------------------------
# A forked child inherits the lock file descriptors: if it kept them, a dead parent's rows
# would look held for as long as the child lives. Closing the child's copy leaves the
# parent's lock in place (flock belongs to the open file, shared until the last close).
_instances: weakref.WeakSet[SQLiteTransport] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for transport in list(_instances):
        transport._abandon_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


@functools.lru_cache(maxsize=16)
def _reserve_statement(queue_count: int) -> str:
    """``UPDATE … RETURNING`` that reserves the best ready rows of ``queue_count`` queues."""
    one_queue = (
        "SELECT id, priority FROM messages WHERE queue = ? AND holder IS NULL "
        "ORDER BY priority DESC, id LIMIT ?"
    )
    if queue_count == 1:
        candidates = one_queue
    else:
        # Each arm walks its queue's index and stops at the limit; only the small union is
        # sorted, never every ready row of every queue.
        arms = " UNION ALL ".join(f"SELECT * FROM ({one_queue})" for _ in range(queue_count))
        candidates = f"SELECT * FROM ({arms}) ORDER BY priority DESC, id LIMIT ?"
    return f"UPDATE messages SET holder = ? WHERE id IN (SELECT id FROM ({candidates})){_RETURNING}"


_NO_ROOM = (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR)
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _no_room_is_temporary(method: _Method) -> _Method:
    """A full disk (or a failed write) raises :class:`BrokerStorageFull`: the caller may
    keep what it was sending and try again later, instead of ending on SQLite's error.

    Until a checkpoint has given the WAL's room back, each call tries one first: SQLite
    checkpoints by itself only at 1000 WAL pages (~4 MB), so on a disk with less room the
    WAL would take all of it, and take back every byte freed later before that point.
    """

    @functools.wraps(method)
    def wrapper(self: SQLiteTransport, *args: Any, **kwargs: Any) -> Any:
        if self._wal_to_give_back:
            self._give_back_wal()
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _NO_ROOM:
                raise
            self._wal_to_give_back = True
            self._give_back_wal()
            raise BrokerStorageFull(f"the broker file {self.path} cannot grow: {exc}") from exc

    return wrapper  # type: ignore[return-value]


def _chunks(ids: Sequence[Hashable]) -> Iterator[Sequence[Hashable]]:
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        yield ids[start : start + _IDS_PER_STATEMENT]


def _delivery(row: _Row) -> Delivery:
    message_id, queue, _priority, redelivered, body, meta = row
    return Delivery(decode_envelope(body, meta), message_id, queue, bool(redelivered))


class SQLiteTransport:
    """Queues in one SQLite database file, safe across the processes of one machine.

    Transport options: ``busy_timeout`` (seconds to wait for the write lock, 10),
    ``polling_interval`` (seconds between checks while a fetch waits, 0.002),
    ``restore_interval`` (seconds between looks for dead holders, 1.0).
    """

    capabilities = Capabilities(priorities=True, cross_process=True, fanout=True)

    def __init__(self, url: str, options: TransportOptions | None = None) -> None:
        self.url = url
        self.options = options or TransportOptions()
        settings = self.options.transport_options
        self.path = database_path(url, "broker_url")
        self._busy_timeout = float(settings.get("busy_timeout", _DEFAULT_BUSY_TIMEOUT))
        self._polling_interval = float(settings.get("polling_interval", _DEFAULT_POLLING_INTERVAL))
        self._restore_interval = float(settings.get("restore_interval", _DEFAULT_RESTORE_INTERVAL))
        self._holders = _HolderDirectory(self.path.with_name(self.path.name + ".holders"))
        self._lock = threading.Lock()  # one statement or transaction at a time per connection
        self._holder: _HolderLock | None = None
        self._unusable: str | None = None
        self._next_restore = 0.0
        self._last_delivery = 0.0
        #: ``data_version`` and queues when a look found nothing ready there. Until another
        #: connection commits (or this one makes rows ready: publish, requeue, restore) there
        #: is no point in looking again: a fetch then reads a counter instead of taking the
        #: write lock (5 µs instead of 44 µs, and no contention with publishers).
        self._nothing_ready_at: tuple[int, tuple[str, ...]] | None = None
        #: A write found the disk full and no checkpoint has emptied the WAL since.
        self._wal_to_give_back = False
        self._conn = self._connect()
        _instances.add(self)

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, self._busy_timeout)
        try:
            self._create_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ImproperlyConfigured(
                f"{self.path} was written by a newer celeriac (schema {version}); upgrade"
            )
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")

    def _give_back_wal(self) -> None:
        """Copy the WAL into the database and truncate it to nothing. It fails, and is
        tried again on the next call, while the database itself has no room to grow."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            (busy, _, _) = self._connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self._wal_to_give_back = busy != 0

    def _connection(self) -> sqlite3.Connection:
        if self._unusable is not None:
            raise RuntimeError(f"{self!r} {self._unusable}")
        return self._conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its first statement."""
        conn = self._connection()
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- the transport interface ----------------------------------------------------------

    def declare(self, queues: Sequence[QueueSpec]) -> None:
        bound = [spec for spec in queues if spec.exchange]
        if not bound:
            return  # queues exist implicitly; only exchanges and bindings are stored
        with self._writing() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO exchanges (name, type) VALUES (?, ?)",
                [(spec.exchange, spec.exchange_type) for spec in bound],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO bindings (exchange, binding_key, queue) VALUES (?, ?, ?)",
                [(spec.exchange, spec.binding_key, spec.name) for spec in bound],
            )

    @_no_room_is_temporary
    def publish(self, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        if len(envelopes) == 1 and not envelopes[0].exchange:
            # The common delay(): one statement is a transaction of its own, which saves the
            # BEGIN and COMMIT round trips (about half the cost of a single publish).
            envelope = envelopes[0]
            if envelope.routing_key:
                row = (
                    envelope.routing_key,
                    envelope.priority,
                    envelope.body,
                    encode_meta(envelope),
                )
                with self._lock:
                    self._connection().execute(_INSERT, row)
                self._nothing_ready_at = None
            return
        # Serialize before taking the write lock, so the transaction stays short.
        encoded = [(envelope, encode_meta(envelope)) for envelope in envelopes]
        with self._writing() as conn:
            routes = self._routes(conn, {envelope.exchange for envelope in envelopes})
            rows = [
                (queue, envelope.priority, envelope.body, meta)
                for envelope, meta in encoded
                for queue in (
                    routes[envelope.exchange](envelope.routing_key)
                    if envelope.exchange
                    else (envelope.routing_key,)
                )
                if queue
            ]
            conn.executemany(_INSERT, rows)
            self._nothing_ready_at = None

    @staticmethod
    def _routes(
        conn: sqlite3.Connection, exchanges: Iterable[str]
    ) -> dict[str, functools.partial[list[str]]]:
        """routing key → queues, per named exchange (an undeclared exchange routes nowhere)."""
        routes: dict[str, functools.partial[list[str]]] = {}
        for exchange in exchanges:
            if not exchange:
                continue
            row = conn.execute("SELECT type FROM exchanges WHERE name = ?", (exchange,)).fetchone()
            bindings = conn.execute(
                "SELECT binding_key, queue FROM bindings WHERE exchange = ?", (exchange,)
            ).fetchall()
            # An exchange nobody declared has no bindings: its messages are unroutable and
            # dropped, as an AMQP broker does.
            routes[exchange] = functools.partial(
                bound_queues, row[0] if row else "direct", bindings
            )
        return routes

    @_no_room_is_temporary
    def fetch(
        self, queues: Sequence[str], limit: int, timeout: float, ack: Sequence[Delivery] = ()
    ) -> list[Delivery]:
        if ack:
            self.ack(ack)
        conn = self._connection()
        if not queues or limit <= 0:
            return []
        holder = self._register()
        deadline = time.monotonic() + timeout
        self._restore_if_due()
        statement = _reserve_statement(len(queues))
        queues = tuple(queues)
        parameters: list[int | str] = [holder]
        for queue in queues:
            parameters += (queue, limit)
        if len(queues) > 1:
            parameters.append(limit)
        while True:
            with self._lock:
                if self._unusable is not None:
                    return []  # closed by another thread while this one waited
                # Read the version before looking, so a commit made right after an empty
                # look still counts as a change worth waiting for.
                seen = conn.execute("PRAGMA data_version").fetchone()[0]
                if self._nothing_ready_at == (seen, queues):
                    rows: list[_Row] = []
                else:
                    rows = conn.execute(statement, parameters).fetchall()
                    self._nothing_ready_at = None if rows else (seen, queues)
            if rows:
                self._last_delivery = time.monotonic()
                rows.sort(key=lambda row: (-row[2], row[0]))
                return self._deliveries(rows)
            if not self._wait_for_change(conn, seen, deadline):
                return []

    def _wait_for_change(self, conn: sqlite3.Connection, seen: int, deadline: float) -> bool:
        """Sleep until another connection commits (True) or the deadline passes (False).

        ``PRAGMA data_version`` changes when any other connection commits, which costs a few
        microseconds to read: a cheap poll that keeps pick-up latency at a few milliseconds.
        """
        interval = self._polling_interval
        if time.monotonic() - self._last_delivery > 1.0:
            interval = max(interval, _IDLE_POLLING_INTERVAL)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))
            with self._lock:
                if self._unusable is not None:
                    return False  # closed by another thread while this one waited
                if conn.execute("PRAGMA data_version").fetchone()[0] != seen:
                    return True
            if self._restore_if_due():
                return True

    def _deliveries(self, rows: Sequence[_Row]) -> list[Delivery]:
        """The rows as deliveries; a row that does not decode moves, as it is, to its queue's
        dead-letter queue."""
        deliveries = []
        undecodable = []
        for row in rows:
            try:
                deliveries.append(_delivery(row))
            except Exception as exc:  # RecursionError and MemoryError too: this row only
                log_dead_letter(f"in row {row[0]}", row[1], exc)
                undecodable.append(row[0])
        if undecodable:
            self._settle_ids(undecodable, _MOVE_TO_DEAD)
        return deliveries

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._settle(deliveries, "DELETE FROM messages")

    def dead_letter(self, items: Sequence[tuple[Delivery, str]]) -> None:
        dead_letter_by_publishing(self, items)

    def reject(self, deliveries: Sequence[Delivery], requeue: bool) -> None:
        if requeue:
            self._settle(deliveries, "UPDATE messages SET holder = NULL, redelivered = 1")
            self._nothing_ready_at = None
        else:
            self._settle(deliveries, "DELETE FROM messages")

    def _settle(self, deliveries: Sequence[Delivery], action: str) -> None:
        """Apply ``action`` to the rows this transport still holds (so repeats are no-ops)."""
        self._settle_ids([delivery.tag for delivery in deliveries], action)

    @_no_room_is_temporary
    def _settle_ids(self, ids: Sequence[Hashable], action: str) -> None:
        conn = self._connection()
        if self._holder is None or not ids:
            return
        statements = [
            (f"{action} WHERE holder = ? AND id IN ({','.join('?' * len(chunk))})", chunk)
            for chunk in _chunks(ids)
        ]
        if len(statements) == 1:  # one statement is a transaction of its own
            with self._lock:
                conn.execute(statements[0][0], (self._holder.holder, *statements[0][1]))
            return
        with self._writing():
            for statement, chunk in statements:
                conn.execute(statement, (self._holder.holder, *chunk))

    def purge(self, queue: str) -> int:
        conn = self._connection()
        with self._lock:
            cursor = conn.execute(
                "DELETE FROM messages WHERE queue = ? AND holder IS NULL", (queue,)
            )
        return cursor.rowcount

    def size(self, queue: str) -> int:
        conn = self._connection()
        with self._lock:
            row = conn.execute(
                "SELECT count(*) FROM messages WHERE queue = ? AND holder IS NULL", (queue,)
            ).fetchone()
        return int(row[0])

    def on_void(self, callback: Callable[[], None]) -> None:
        pass  # reserved messages stay with their holder across reconnects

    def close(self) -> None:
        if self._unusable is not None:
            return  # closed already, or inherited across a fork: the parent owns it
        self._unusable = "is closed"
        _instances.discard(self)
        holder, self._holder = self._holder, None
        try:
            if holder is not None:
                with self._lock:
                    self._conn.execute(
                        "UPDATE messages SET holder = NULL, redelivered = 1 WHERE holder = ?",
                        (holder.holder,),
                    )
        finally:
            if holder is not None:
                # If the requeue failed the rows still name this holder; with its file gone
                # the next consumer's sweep requeues them.
                holder.release(remove=True)
            with self._lock:
                self._conn.close()

    def __repr__(self) -> str:
        return f"<SQLiteTransport {self.url!r}>"

    # -- holders and their liveness -------------------------------------------------------

    def _register(self) -> int:
        if self._holder is None:
            self._holder = self._holders.register()
            # Without close(), the lock goes when the transport is collected, so the rows
            # it held come back instead of waiting for the process to end.
            weakref.finalize(self, self._holder.release, False)
        return self._holder.holder

    def _restore_if_due(self) -> int:
        now = time.monotonic()
        if now < self._next_restore:
            return 0
        self._next_restore = now + self._restore_interval
        return self.restore_dead_holders()

    def restore_dead_holders(self) -> int:
        """Return the rows of every holder whose process is gone to their queues.

        Runs inside :meth:`fetch` about once a second; returns how many rows came back.
        """
        conn = self._connection()
        own = self._holder.holder if self._holder is not None else None
        with self._lock:
            holding = {
                holder
                for (holder,) in conn.execute(
                    "SELECT DISTINCT holder FROM messages WHERE holder IS NOT NULL"
                )
            }
        dead = self._holders.take_dead((holding | self._holders.listed()) - {own})
        if not dead:
            return 0
        abandoned = [(lock.holder,) for lock in dead if lock.holder in holding]
        try:
            if not abandoned:
                return 0
            with self._writing():
                cursor = conn.executemany(
                    "UPDATE messages SET holder = NULL, redelivered = 1 WHERE holder = ?",
                    abandoned,
                )
                self._nothing_ready_at = None
            return cursor.rowcount
        finally:
            for lock in dead:
                lock.release(remove=True)

    def _abandon_after_fork(self) -> None:
        """In a forked child: drop the inherited lock and never touch the connection."""
        if self._unusable is not None:
            return
        self._unusable = (
            f"was created in process {os.getppid()} and cannot be used after fork(): "
            "create a new transport in the child"
        )
        if self._holder is not None:
            self._holder.release(remove=False)
        abandon_in_forked_child(self._conn)
