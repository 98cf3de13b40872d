"""Shared pieces for result stores that keep one serialized value per key (memory, Redis).

* :data:`TASK_KEY_PREFIX` / :data:`GROUP_KEY_PREFIX`: Celery's key names, so that Celery
  peers find the values.
* :class:`MetaCodec`: a meta (or any stored value) to bytes and back with
  ``result_serializer``, refusing content types outside ``result_accept_content``.
* :func:`may_overwrite`: the sticky-SUCCESS rule.
* :func:`wait_until_ready`: the loop behind ``wait``; it polls, or sleeps on a
  notification when the store can push.
* :class:`KeyValueBackend`: the whole :class:`~celeriac.backends.base.ResultBackend`
  interface on top of three primitives a subclass supplies (read values, write values
  with an expiry, delete keys), except ``chord_part_return``, which needs the store's own
  atomic operation.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from celeriac import states
from celeriac.backends.base import (
    BackendCapabilities,
    BackendOptions,
    ChordMember,
    ResultBackend,
)
from celeriac.exceptions import BackendStoreError, TimeoutError
from celeriac.protocol import serializers
from celeriac.protocol.results import Meta, exception_to_dict, loads_result

#: ``celery-task-meta-<task_id>``: one task's meta.
TASK_KEY_PREFIX = "celery-task-meta-"
#: ``celery-taskset-meta-<group_id>``: ``{"result": <group result tuple>}``.
GROUP_KEY_PREFIX = "celery-taskset-meta-"


class MetaCodec:
    """Encodes stored values with the configured serializer and decodes them back."""

    __slots__ = ("_accept", "_dumps", "_max", "content_type")

    def __init__(self, options: BackendOptions) -> None:
        serializer = serializers.get(options.serializer)
        self.content_type = serializer.content_type
        self._dumps = serializer.dumps
        self._accept = options.accept
        self._max = options.max_result_bytes

    def encode(self, value: Any) -> bytes:
        return self._dumps(value)

    def encode_meta(self, meta: Meta) -> bytes:
        """A task's meta; one whose result is over ``result_max_size`` is stored as a
        FAILURE that says so, instead of the result."""
        data = self._dumps(dict(meta))
        if len(data) <= self._max:
            return data
        error = BackendStoreError(
            f"result of {len(data):,} bytes is over result_max_size ({self._max:,})"
        )
        failed: Meta = {
            **meta,
            "status": states.FAILURE,
            "result": exception_to_dict(error),
            "traceback": f"BackendStoreError: {error}",
        }
        return self._dumps(failed)

    def decode(self, data: bytes, content_type: str | None = None) -> Any:
        """Decode ``data``, written as ``content_type`` (default: the configured one)."""
        return loads_result(data, content_type or self.content_type, self._accept)


def may_overwrite(stored_status: str | None) -> bool:
    """Whether a new meta may replace one in ``stored_status``: a SUCCESS is final."""
    return stored_status != states.SUCCESS


def wait_until_ready(
    fetch: Callable[[Sequence[str]], Sequence[Meta | None]],
    task_ids: Sequence[str],
    timeout: float | None,
    interval: float,
    pause: Callable[[float | None], object] | None = None,
) -> list[Meta]:
    """Call ``fetch`` for the ids not yet ready until all are; return their metas in order.

    Between rounds it calls ``pause(seconds)``, at most ``interval`` and never past the
    deadline. A store that is notified of writes passes a ``pause`` that returns early on a
    notification (``Condition.wait``) and ``interval=math.inf``; ``pause(None)`` then means
    "until notified". The default ``pause`` sleeps, so it needs a finite ``interval``.
    Raises :class:`~celeriac.exceptions.TimeoutError` after ``timeout``.
    """
    pause = pause or _sleep
    deadline = None if timeout is None else time.monotonic() + timeout
    ready: dict[str, Meta] = {}
    pending = list(dict.fromkeys(task_ids))
    while True:
        for task_id, meta in zip(pending, fetch(pending), strict=True):
            if meta is not None and meta.get("status") in states.READY_STATES:
                ready[task_id] = meta.copy()
        pending = [task_id for task_id in pending if task_id not in ready]
        if not pending:
            return [ready[task_id] for task_id in task_ids]
        delay = interval
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"The operation timed out after {timeout:g} s: {len(pending)} of "
                    f"{len(set(task_ids))} results not ready"
                )
            delay = min(delay, remaining)
        pause(None if math.isinf(delay) else delay)


def _sleep(seconds: float | None) -> None:
    if seconds is None:
        raise ValueError("polling needs a finite interval")
    time.sleep(seconds)


class KeyValueBackend(ResultBackend):
    """A result backend over a store of bytes by key, using Celery's key names.

    Subclasses implement :meth:`_read`, :meth:`_write`, :meth:`_delete` and
    ``chord_part_return``; they may override :meth:`_write_guard` to make the
    read-check-write of :meth:`store` atomic (the memory store holds its lock; a network
    store may leave it as is, as Celery does), and ``wait`` when they can push.
    """

    capabilities = BackendCapabilities()

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.options = options
        self.codec = MetaCodec(options)
        #: Seconds a value lives; ``None`` (or 0, as in Celery) keeps it.
        self.expires: float | None = options.expires or None

    # -- primitives ------------------------------------------------------------------

    def _read(self, keys: Sequence[str]) -> list[bytes | None]:
        raise NotImplementedError

    def _write(self, items: Sequence[tuple[str, bytes]], expires: float | None) -> None:
        raise NotImplementedError

    def _delete(self, keys: Sequence[str]) -> None:
        raise NotImplementedError

    def _write_guard(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    # -- the interface ---------------------------------------------------------------

    def store(self, metas: Sequence[Meta]) -> None:
        if not metas:
            return
        keys = [TASK_KEY_PREFIX + meta["task_id"] for meta in metas]
        with self._write_guard():
            statuses = dict(self._stored_statuses(list(dict.fromkeys(keys))))
            writes: dict[str, bytes] = {}
            for key, meta in zip(keys, metas, strict=True):
                if may_overwrite(statuses[key]):
                    writes[key] = self.codec.encode_meta(meta)
                    statuses[key] = meta["status"]
            if writes:
                self._write(list(writes.items()), self.expires)

    def _stored_statuses(self, keys: Sequence[str]) -> Iterator[tuple[str, str | None]]:
        for key, data in zip(keys, self._read(keys), strict=True):
            yield key, None if data is None else self.codec.decode(data).get("status")

    def get(self, task_ids: Sequence[str]) -> list[Meta | None]:
        if not task_ids:
            return []
        values = self._read([TASK_KEY_PREFIX + task_id for task_id in task_ids])
        return [None if data is None else self.codec.decode(data) for data in values]

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        return wait_until_ready(self.get, task_ids, timeout, interval)

    def forget(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            self._delete([TASK_KEY_PREFIX + task_id for task_id in task_ids])

    def save_group(self, group_id: str, value: Any) -> None:
        data = self.codec.encode({"result": value})
        self._write([(GROUP_KEY_PREFIX + group_id, data)], self.expires)

    def get_group(self, group_id: str) -> Any | None:
        (data,) = self._read([GROUP_KEY_PREFIX + group_id])
        return None if data is None else self.codec.decode(data).get("result")

    def forget_group(self, group_id: str) -> None:
        self._delete([GROUP_KEY_PREFIX + group_id])

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to release by default."""
