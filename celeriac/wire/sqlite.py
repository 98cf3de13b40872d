"""SQLite files shared by the processes of one machine: which file a URL names, and the
connection settings that let many processes use it at once.

URLs follow SQLAlchemy (and so Celery's ``db+sqlite://`` result backend): three slashes
before a relative path (``sqlite:///results.db``, from the working directory), four before
an absolute one (``sqlite:////var/lib/results.db``).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from celeriac.exceptions import ImproperlyConfigured

SCHEMES = ("sqlite", "db+sqlite")

#: Connections a forked child inherited. SQLite must not use, or even close, a connection
#: across a fork (closing runs lock and WAL bookkeeping that belongs to the parent), and a
#: collected ``sqlite3.Connection`` closes itself: so the child keeps them referenced.
_inherited: list[sqlite3.Connection] = []


def database_path(url: str, setting: str) -> Path:
    """The file ``url`` names, absolute and without symlinks.

    Canonical, because processes meet by it (the broker's holder locks are found next to
    it, the result backend wakes its waiters per file): two processes that reach the
    database by different paths must still find each other. ``setting`` names where the
    URL came from (``broker_url``), for the error a URL without a file gets.
    """
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in SCHEMES:
        raise ImproperlyConfigured(f"{setting} {url!r} is not a sqlite:/// URL")
    path = rest.split("?", 1)[0]
    # A path without its leading slash names a host, which SQLite files do not have.
    if not path.startswith("/") or path in ("/", "/:memory:"):
        raise ImproperlyConfigured(
            f"{setting} {url!r} names no database file: use {scheme}:///relative/path.db or "
            f"{scheme}:////absolute/path.db (memory:// keeps them inside one process)"
        )
    return Path(path[1:]).resolve()


def connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection to the file at ``path``, in WAL mode, that waits up to ``busy_timeout``
    seconds for a lock held by another connection instead of failing.

    Transactions are explicit (``BEGIN IMMEDIATE`` … ``COMMIT``), and the connection may be
    used by a thread other than the one that opened it (one at a time).
    """
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,
        check_same_thread=False,
        cached_statements=256,
    )
    try:
        _use_wal(connection, time.monotonic() + busy_timeout)
        # NORMAL is durable against process crashes in WAL mode; only a power loss may
        # lose the last commits, a fair trade for a much faster commit.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA journal_size_limit=67108864")  # give back disk after a burst
    except BaseException:
        connection.close()
        raise
    return connection


def abandon_in_forked_child(connection: sqlite3.Connection) -> None:
    """In a forked child: a connection of the parent's, never to be used nor closed here."""
    _inherited.append(connection)


def _use_wal(connection: sqlite3.Connection, deadline: float) -> None:
    """WAL journal: readers never block the writer, and the writer does not block them."""
    while True:
        try:
            # Switching to WAL needs a moment alone with the file; when several processes
            # open a new database together it can report "locked" without waiting.
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY  # any extended code
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
