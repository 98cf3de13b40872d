"""``memory://`` (also Celery's ``cache+memory://``): results kept in this process.

Every backend created with the same URL in one process shares one store, so a worker
thread and the client in a test or a single-process app see the same results. Values are
serialized like in any other store, so a result that a real backend could not carry fails
here too. ``wait`` sleeps on a condition that every write notifies: no polling.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import weakref
from collections.abc import Sequence

from celeriac.backends.base import BackendCapabilities, BackendOptions, ChordMember
from celeriac.backends.kv import KeyValueBackend, wait_until_ready
from celeriac.protocol.results import Meta


class _SharedStore:
    """The values of one URL: key → (data, expiry on the monotonic clock or None)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[bytes, float | None]] = {}
        #: group id → {index: encoded meta} for chords still collecting their header.
        self.chord_parts: dict[str, dict[int, bytes]] = {}
        #: group id → expiry of the "already completed" mark that makes late duplicates no-ops.
        self.chords_done: dict[str, float | None] = {}
        # Reentrant: ``store`` holds it around the read-check-write of the base class.
        self.changed = threading.Condition(threading.RLock())
        self.last_purge = time.monotonic()

    def purge_expired(self, now: float) -> None:
        self.last_purge = now
        for table in (self.values, self.chords_done):
            expired = [key for key, entry in table.items() if _expired(entry, now)]
            for key in expired:
                del table[key]


def _expired(entry: tuple[bytes, float | None] | float | None, now: float) -> bool:
    expires_at = entry[1] if isinstance(entry, tuple) else entry
    return expires_at is not None and expires_at <= now


#: Seconds between sweeps of expired values, done by a write.
_PURGE_PERIOD = 60.0

_stores: weakref.WeakValueDictionary[str, _SharedStore] = weakref.WeakValueDictionary()
_stores_lock = threading.Lock()


def _shared_store(url: str) -> _SharedStore:
    # ``cache+memory://x`` and ``memory://x`` name the same store.
    name = url.removeprefix("cache+")
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _SharedStore()
        return store


class MemoryBackend(KeyValueBackend):
    capabilities = BackendCapabilities(enabled=True, cross_process=False)

    def __init__(self, url: str = "memory://", options: BackendOptions | None = None) -> None:
        super().__init__(url, options or BackendOptions())
        # The store lives as long as some backend of its URL does.
        self._store = _shared_store(url)

    def _read(self, keys: Sequence[str]) -> list[bytes | None]:
        values = self._store.values
        now = time.monotonic()
        with self._store.changed:
            found: list[bytes | None] = []
            for key in keys:
                entry = values.get(key)
                if entry is not None and _expired(entry, now):
                    del values[key]
                    entry = None
                found.append(None if entry is None else entry[0])
            return found

    def _write(self, items: Sequence[tuple[str, bytes]], expires: float | None) -> None:
        now = time.monotonic()
        expires_at = None if expires is None else now + expires
        with self._store.changed:
            for key, data in items:
                self._store.values[key] = (data, expires_at)
            self._store.changed.notify_all()
            # Expired values are skipped on read; values nobody reads again go here.
            if now - self._store.last_purge > _PURGE_PERIOD:
                self._store.purge_expired(now)

    def _delete(self, keys: Sequence[str]) -> None:
        with self._store.changed:
            for key in keys:
                self._store.values.pop(key, None)

    def _write_guard(self) -> contextlib.AbstractContextManager[object]:
        return self._store.changed

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        # Holding the condition between a read and the sleep means no write is missed.
        with self._store.changed:
            return wait_until_ready(self.get, task_ids, timeout, math.inf, self._store.changed.wait)

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        store = self._store
        with store.changed:
            if group_id in store.chords_done:
                if not _expired(store.chords_done[group_id], time.monotonic()):
                    return None
                del store.chords_done[group_id]
            parts = store.chord_parts.setdefault(group_id, {})
            # The first report of a member counts; duplicates change nothing.
            parts.setdefault(index, self.codec.encode_meta(meta))
            if len(parts) < size:
                return None
            del store.chord_parts[group_id]
            expires = self.expires
            store.chords_done[group_id] = None if expires is None else time.monotonic() + expires
            return [self.codec.decode(parts[position]) for position in sorted(parts)]

    def cleanup(self) -> None:
        """Drop expired values now (reads skip them anyway)."""
        with self._store.changed:
            self._store.purge_expired(time.monotonic())
