"""``db+sqlite:///path.db`` / ``sqlite:///path.db``: results in one SQLite file.

Safe across processes on one machine: the file is in WAL mode (readers never block the
writer), every connection waits on a locked database (``busy_timeout``) instead of
failing, and every write is one short ``BEGIN IMMEDIATE`` transaction. Paths follow
SQLAlchemy: three slashes are relative to the working directory, four are absolute.

Tables (``celeriac_*``, so a Celery database-backend schema in the same file is left
alone):

* ``celeriac_taskmeta``: task id → status, serialized meta, its content type, expiry.
  The upsert never replaces a row whose status is SUCCESS.
* ``celeriac_groupmeta``: group id → serialized ``{"result": <group result tuple>}``.
* ``celeriac_chord_parts`` / ``celeriac_chords_done``: the members of chord headers that
  have reported, keyed by (group id, index) so duplicate reports count once, and the
  groups already completed, so late duplicates are ignored.

Expired rows are invisible to reads and deleted by :meth:`SQLiteBackend.cleanup` (called
now and then by ``store`` and by Celery's ``backend_cleanup`` task).

``wait`` polls, but cheaply: it re-reads rows only when ``PRAGMA data_version`` says
another connection committed, and a write from this process wakes it at once.

Connections are opened per thread and per process, on first use (creating the backend
leaves none open). SQLite advises against forking while a connection is open, so a
process that forks workers should do so before it reads or stores results itself.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from celeriac.backends.base import BackendCapabilities, BackendOptions, ChordMember, ResultBackend
from celeriac.backends.kv import MetaCodec, wait_until_ready
from celeriac.exceptions import ImproperlyConfigured
from celeriac.protocol.results import Meta
from celeriac.wire.sqlite import abandon_in_forked_child, connect, database_path

_SCHEMA = """
-- Rows in insertion order with a unique index on the (random) task id: a batch of new
-- results then dirties a few pages at the end of the table instead of one page per row,
-- which measured 4x cheaper commits (and checkpoints) than a table keyed by task id.
CREATE TABLE IF NOT EXISTS celeriac_taskmeta (
    id INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    content_type TEXT NOT NULL,
    meta BLOB NOT NULL,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS celeriac_taskmeta_expires
    ON celeriac_taskmeta (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS celeriac_groupmeta (
    group_id TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_chord_parts (
    group_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    content_type TEXT NOT NULL,
    meta BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (group_id, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS celeriac_chords_done (
    group_id TEXT PRIMARY KEY,
    expires_at REAL
) WITHOUT ROWID;
"""

_UPSERT_TASK = """
INSERT INTO celeriac_taskmeta (task_id, status, content_type, meta, expires_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (task_id) DO UPDATE SET
    status = excluded.status, content_type = excluded.content_type,
    meta = excluded.meta, expires_at = excluded.expires_at
WHERE celeriac_taskmeta.status != 'SUCCESS' OR celeriac_taskmeta.expires_at <= ?
"""

_NOT_EXPIRED = "(expires_at IS NULL OR expires_at > ?)"
#: Ids per ``IN (...)`` query, under SQLite's smallest historical variable limit (999).
_IDS_PER_QUERY = 900
#: How often ``wait`` checks ``PRAGMA data_version`` at most; ``interval`` may ask for
#: less often. A check reads a counter in shared memory, a few microseconds.
_CHANGE_CHECK_PERIOD = 0.02
_FIRST_CHANGE_CHECK = 0.001
#: Seconds between the expired-row sweeps that ``store`` does on its own.
_CLEANUP_PERIOD = 300.0
_DEFAULT_BUSY_TIMEOUT = 30.0


class _ChangeSignal:
    """Wakes waiters in this process when any backend of the same file commits results."""

    def __init__(self) -> None:
        self.generation = 0
        self.condition = threading.Condition()

    def notify(self) -> None:
        with self.condition:
            self.generation += 1
            self.condition.notify_all()

    def wait_for_change(self, since: int, timeout: float | None) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.generation != since, timeout)


_signals: dict[Path, _ChangeSignal] = {}
_signals_lock = threading.Lock()


def _change_signal(path: Path) -> _ChangeSignal:
    with _signals_lock:
        return _signals.setdefault(path, _ChangeSignal())


class _ThreadConnection:
    """One thread's connection; when the thread ends it is collected and closed."""

    __slots__ = ("__weakref__", "connection", "pid")

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.pid = os.getpid()
        _open_connections.add(self)

    def __del__(self) -> None:
        if self.pid == os.getpid():
            with contextlib.suppress(Exception):
                self.connection.close()


# -- fork safety -------------------------------------------------------------------------
_open_connections: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()


def _abandon_inherited_connections() -> None:
    for held in list(_open_connections):
        abandon_in_forked_child(held.connection)


os.register_at_fork(after_in_child=_abandon_inherited_connections)


class SQLiteBackend(ResultBackend):
    capabilities = BackendCapabilities(enabled=True, cross_process=True)

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        self.url = url
        self.options = options or BackendOptions()
        self.path = database_path(url, "result_backend")
        self.codec = MetaCodec(self.options)
        self.expires: float | None = self.options.expires or None
        self.busy_timeout = float(
            self.options.transport_options.get("busy_timeout", _DEFAULT_BUSY_TIMEOUT)
        )
        self._local = threading.local()
        self._connections: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._signal = _change_signal(self.path)
        self._last_cleanup = time.monotonic()
        self._setup_schema()

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            return connect(self.path, self.busy_timeout)
        except sqlite3.OperationalError as exc:
            raise ImproperlyConfigured(
                f"result_backend {self.url!r}: cannot open {self.path}: {exc}"
            ) from exc

    def _connection(self) -> sqlite3.Connection:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        # After a fork the child must not touch the parent's connection: open its own.
        if held is None or held.pid != os.getpid():
            held = _ThreadConnection(self._connect())
            self._local.held = held
            self._connections.add(held)
        return held.connection

    def _setup_schema(self) -> None:
        # A connection of its own, closed at once: creating the backend leaves nothing
        # open that a fork (the prefork worker) would carry into its children.
        connection = self._connect()
        try:
            self._create_tables(connection)
        finally:
            connection.close()

    @staticmethod
    def _create_tables(connection: sqlite3.Connection) -> None:
        # Other processes creating the tables at the same time may make it fail once.
        for attempt in range(50):
            try:
                connection.executescript(_SCHEMA)
                return
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def _expiry(self, now: float) -> float | None:
        return None if self.expires is None else now + self.expires

    # -- task results ----------------------------------------------------------------

    def store(self, metas: Sequence[Meta]) -> None:
        if not metas:
            return
        now = time.time()
        expires_at = self._expiry(now)
        content_type = self.codec.content_type
        rows = [
            (
                meta["task_id"],
                meta["status"],
                content_type,
                self.codec.encode_meta(meta),
                expires_at,
                now,
            )
            for meta in metas
        ]
        with self._transaction() as connection:
            connection.executemany(_UPSERT_TASK, rows)
        self._signal.notify()
        if time.monotonic() - self._last_cleanup > _CLEANUP_PERIOD:
            self.cleanup()

    def get(self, task_ids: Sequence[str]) -> list[Meta | None]:
        if not task_ids:
            return []
        connection = self._connection()
        now = time.time()
        found: dict[str, Meta] = {}
        unique = list(dict.fromkeys(task_ids))
        for start in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[start : start + _IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                "SELECT task_id, content_type, meta FROM celeriac_taskmeta "
                f"WHERE task_id IN ({marks}) AND {_NOT_EXPIRED}",
                (*chunk, now),
            )
            for task_id, content_type, data in rows:
                found[task_id] = self.codec.decode(data, content_type)
        return [found.get(task_id) for task_id in task_ids]

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        connection = self._connection()
        seen: tuple[int, int] | None = None

        def fetch_if_changed(pending: Sequence[str]) -> list[Meta | None]:
            nonlocal seen
            # Read the markers before the rows, so a commit in between is seen next time.
            (data_version,) = connection.execute("PRAGMA data_version").fetchone()
            marker = (data_version, self._signal.generation)
            if marker == seen:
                return [None] * len(pending)
            seen = marker
            return self.get(pending)

        # Look again after 1 ms, then less and less often up to the period: a quick task's
        # result is seen within a few ms, a long wait costs a check every period.
        step = _FIRST_CHANGE_CHECK

        def pause(seconds: float | None) -> None:
            nonlocal step
            wait = step if seconds is None else min(seconds, step)
            step = min(step * 1.5, _CHANGE_CHECK_PERIOD)
            self._signal.wait_for_change(seen[1] if seen else -1, wait)

        period = min(interval, _CHANGE_CHECK_PERIOD)
        return wait_until_ready(fetch_if_changed, task_ids, timeout, period, pause)

    def forget(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            with self._transaction() as connection:
                connection.executemany(
                    "DELETE FROM celeriac_taskmeta WHERE task_id = ?",
                    [(task_id,) for task_id in task_ids],
                )

    # -- groups ----------------------------------------------------------------------

    def save_group(self, group_id: str, value: Any) -> None:
        data = self.codec.encode({"result": value})
        with self._transaction() as connection:
            connection.execute(
                "INSERT OR REPLACE INTO celeriac_groupmeta "
                "(group_id, content_type, value, expires_at) VALUES (?, ?, ?, ?)",
                (group_id, self.codec.content_type, data, self._expiry(time.time())),
            )

    def get_group(self, group_id: str) -> Any | None:
        row = (
            self._connection()
            .execute(
                "SELECT content_type, value FROM celeriac_groupmeta "
                f"WHERE group_id = ? AND {_NOT_EXPIRED}",
                (group_id, time.time()),
            )
            .fetchone()
        )
        return None if row is None else self.codec.decode(row[1], row[0]).get("result")

    def forget_group(self, group_id: str) -> None:
        with self._transaction() as connection:
            connection.execute("DELETE FROM celeriac_groupmeta WHERE group_id = ?", (group_id,))

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        now = time.time()
        expires_at = self._expiry(now)
        with self._transaction() as connection:
            done = connection.execute(
                f"SELECT 1 FROM celeriac_chords_done WHERE group_id = ? AND {_NOT_EXPIRED}",
                (group_id, now),
            ).fetchone()
            if done is not None:
                return None
            # The primary key makes a duplicate report of a member a no-op.
            connection.execute(
                "INSERT OR IGNORE INTO celeriac_chord_parts "
                "(group_id, idx, task_id, content_type, meta, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    group_id,
                    index,
                    meta["task_id"],
                    self.codec.content_type,
                    self.codec.encode_meta(meta),
                    expires_at,
                ),
            )
            (count,) = connection.execute(
                "SELECT COUNT(*) FROM celeriac_chord_parts WHERE group_id = ?", (group_id,)
            ).fetchone()
            if count < size:
                return None
            rows = connection.execute(
                "SELECT content_type, meta FROM celeriac_chord_parts "
                "WHERE group_id = ? ORDER BY idx",
                (group_id,),
            ).fetchall()
            connection.execute("DELETE FROM celeriac_chord_parts WHERE group_id = ?", (group_id,))
            connection.execute(
                "INSERT OR REPLACE INTO celeriac_chords_done (group_id, expires_at) VALUES (?, ?)",
                (group_id, expires_at),
            )
        return [self.codec.decode(data, content_type) for content_type, data in rows]

    # -- housekeeping ----------------------------------------------------------------

    def cleanup(self) -> None:
        """Delete expired rows (Celery's ``backend_cleanup`` task calls this)."""
        self._last_cleanup = time.monotonic()
        now = time.time()
        with self._transaction() as connection:
            for table in (
                "celeriac_taskmeta",
                "celeriac_groupmeta",
                "celeriac_chord_parts",
                "celeriac_chords_done",
            ):
                connection.execute(f"DELETE FROM {table} WHERE expires_at <= ?", (now,))

    def close(self) -> None:
        for held in list(self._connections):
            if held.pid == os.getpid():  # never one a forked child inherited
                with contextlib.suppress(sqlite3.Error):
                    held.connection.close()
        self._connections.clear()
        self._local = threading.local()
