"""``redis://`` results, in the keys and format Celery's Redis backend uses.

* ``celery-task-meta-<id>``: the meta, serialized with ``result_serializer`` (JSON by
  default), written with ``SETEX`` (plain ``SET`` without expiry) and ``PUBLISH``\\ed on a
  channel of the same name, in one round trip. A stored SUCCESS is never overwritten: the
  check and the write are one script (Celery reads, then writes).
* ``celery-taskset-meta-<id>``: ``{"result": <group tuple>}``.
* Chords as Celery 5.7 joins them, so Celery and celeriac workers can share one chord:
  ``celery-taskset-meta-<gid>.j`` (sorted set, score ``group_index``, members
  ``[1, task_id, state, result]``), ``.s`` (size; celeriac writes it when no client did),
  ``.t`` (size adjustments), ``.d`` (``task_id:index`` already counted) and ``.c`` (the
  claim; ``done`` once the body was released). One script counts, dedups and claims.
* ``wait`` subscribes to the channels first, then reads what was written before: no polling.
* ``result_backend_transport_options["global_keyprefix"]`` prefixes every key, with ``_``
  appended unless it ends in one of ``:_-.``, as in Celery.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from celeriac import states
from celeriac.backends.base import BackendCapabilities, BackendOptions, ChordMember
from celeriac.backends.kv import GROUP_KEY_PREFIX, TASK_KEY_PREFIX, KeyValueBackend
from celeriac.exceptions import TimeoutError
from celeriac.protocol.results import Meta
from celeriac.wire.redis.commands import Arg, PooledWire
from celeriac.wire.redis.connection import call_with_retry, connection_pool
from celeriac.wire.redis.pubsub import Subscriber, text

logger = logging.getLogger("celeriac.backends.redis")

T = TypeVar("T")

#: How long the "chord body released" mark keeps late duplicates out (Celery: >= 300 s).
_CHORD_DONE_SECONDS = 300
_SET_COMMAND = {"EX": "SETEX", "PX": "PSETEX"}
#: Longest pause between retries of a lost connection (a caller may be waiting).
_MAX_RETRY_DELAY = 1.0

#: KEYS: the task key. ARGV: value, expiry unit ('EX', 'PX' or ''), expiry, codec of
#: stored values ('json' or 'msgpack'). Writes and publishes unless a SUCCESS is stored.
_STORE = """
local stored = redis.call('GET', KEYS[1])
if stored then
    local ok, meta
    if ARGV[4] == 'msgpack' then
        ok, meta = pcall(cmsgpack.unpack, stored)
    else
        ok, meta = pcall(cjson.decode, stored)
    end
    if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return 0 end
end
if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
else
    redis.call('SET', KEYS[1], ARGV[1], ARGV[2], ARGV[3])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""

#: KEYS: .j, .t, .s, .d, .c of the group. ARGV: task id, member, group index, expiry in ms
#: (0: none), seconds the done mark lasts, chord size known to the caller (0: unknown).
#: Returns the members in index order to the one call that completes the chord, else nil.
_CHORD_PART = """
if redis.call('GET', KEYS[5]) == 'done' then return false end
local counted = ARGV[1] .. ':' .. ARGV[3]
if redis.call('SISMEMBER', KEYS[4], counted) == 0 then
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
    redis.call('SADD', KEYS[4], counted)
end
if redis.call('EXISTS', KEYS[3]) == 0 and tonumber(ARGV[6]) > 0 then
    redis.call('SET', KEYS[3], ARGV[6])
end
local expires = tonumber(ARGV[4])
if expires > 0 then
    for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], expires) end
end
local size = tonumber(redis.call('GET', KEYS[3]) or '0')
size = size + tonumber(redis.call('GET', KEYS[2]) or '0')
if size <= 0 or redis.call('ZCARD', KEYS[1]) < size then return false end
-- A Celery worker may hold a claim token: then it releases the body, not us.
if not redis.call('SET', KEYS[5], 'done', 'NX', 'EX', ARGV[5]) then return false end
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return members
"""


def key_prefix(transport_options: Mapping[str, Any]) -> str:
    """Celery's rule: ``global_keyprefix`` plus ``_`` unless it ends in ``:_-.``."""
    prefix = str(transport_options.get("global_keyprefix") or "")
    if prefix and prefix[-1] not in ":_-.":
        prefix += "_"
    return prefix


class RedisBackend(KeyValueBackend):
    """Celery-compatible results in Redis."""

    capabilities = BackendCapabilities(enabled=True, cross_process=True)

    def __init__(self, url: str, options: BackendOptions | None = None) -> None:
        super().__init__(url, options or BackendOptions())
        extra = self.options.transport_options
        self._pool = connection_pool(
            url,
            "result_backend",
            connect_timeout=float(extra.get("socket_connect_timeout", 4.0)),
            socket_timeout=float(extra.get("socket_timeout", 30.0)),
        )
        self._client = redis.Redis(connection_pool=self._pool)
        #: The connection reads and writes go through (checked out once); each thread's
        #: subscriber also keeps one: the pool is closed if this backend is dropped unclosed.
        self._commands = PooledWire(self, self._pool)
        self._local = threading.local()
        self._prefix = key_prefix(extra)
        self._store_script = self._client.register_script(_STORE)
        self._chord_script = self._client.register_script(_CHORD_PART)
        #: stored values the store script can read to keep a SUCCESS (others: read first)
        self._script_codec = {"application/json": "json", "application/x-msgpack": "msgpack"}.get(
            self.codec.content_type
        )
        self._max_retries = int(extra.get("max_retries", 20))

    def __repr__(self) -> str:
        return f"<RedisBackend {self.url!r}>"

    # -- the key-value primitives (keys come without the global prefix) -------------------

    def _read(self, keys: Sequence[str]) -> list[bytes | None]:
        prefixed = [self._prefix + key for key in keys]
        values = self._call("read", lambda: self._commands().call("MGET", *prefixed))
        return [value.encode() if isinstance(value, str) else value for value in values]

    def _write(self, items: Sequence[tuple[str, bytes]], expires: float | None) -> None:
        unit, amount = _expiry(expires)
        commands: list[tuple[Arg, ...]] = []
        for key, data in items:
            full_key = self._prefix + key
            if unit:  # SETEX/PSETEX, the commands Celery sends (redis-py deprecates them)
                commands.append((_SET_COMMAND[unit], full_key, amount, data))
            else:
                commands.append(("SET", full_key, data))
            commands.append(("PUBLISH", full_key, data))
        if commands:
            self._call("write", lambda: self._commands().pipeline(commands))

    def _delete(self, keys: Sequence[str]) -> None:
        prefixed = [self._prefix + key for key in keys]
        self._call("delete", lambda: self._client.delete(*prefixed))

    # -- the interface -----------------------------------------------------------------

    def store(self, metas: Sequence[Meta]) -> None:
        if not metas:
            return
        codec = self._script_codec
        if codec is None:  # pickle, yaml: Lua cannot read them
            super().store(metas)
            return
        unit, amount = _expiry(self.expires)
        prefix = self._prefix + TASK_KEY_PREFIX
        encode = self.codec.encode_meta
        calls: list[tuple[list[Arg], list[Arg]]] = [
            ([prefix + meta["task_id"]], [encode(meta), unit, amount, codec]) for meta in metas
        ]
        self._call("store", lambda: self._commands().scripts(self._store_script, calls))

    def wait(self, task_ids: Sequence[str], timeout: float | None, interval: float) -> list[Meta]:
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._call("wait", lambda: self._wait(task_ids, deadline, timeout))

    def chord_part_return(
        self, group_id: str, size: int, index: int, meta: Meta
    ) -> list[ChordMember] | None:
        group_key = self._prefix + GROUP_KEY_PREFIX + group_id
        task_id = str(meta.get("task_id") or "")
        member = self.codec.encode([1, task_id, meta.get("status"), meta.get("result")])
        expires_ms = round(self.expires * 1000) if self.expires else 0
        members = self._call(
            "chord_part_return",
            lambda: self._chord_script(
                keys=[f"{group_key}.{suffix}" for suffix in ("j", "t", "s", "d", "c")],
                args=[task_id, member, index, expires_ms, _CHORD_DONE_SECONDS, size],
            ),
        )
        if not members:
            return None
        joined: list[ChordMember] = []
        for data in members:
            _, member_id, status, result = self.codec.decode(data)
            joined.append({"task_id": member_id, "status": status, "result": result})
        return joined

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Store a chord's header size before its header is sent, as Celery's client does:
        a Celery worker counts a chord complete only against this ``.s`` key. A frozen
        chord applied again keeps its group id, so the last run's claim is dropped."""
        group_key = self._prefix + GROUP_KEY_PREFIX + group_id
        unit, amount = _expiry(self.expires)

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(f"{group_key}.c")
            if unit == "EX":
                pipe.set(f"{group_key}.s", size, ex=amount)
            elif unit == "PX":
                pipe.set(f"{group_key}.s", size, px=amount)
            else:
                pipe.set(f"{group_key}.s", size)
            pipe.execute()

        self._call("set_chord_size", write)

    def close(self) -> None:
        self._local = threading.local()
        self._pool.disconnect()  # the wire and every thread's subscriber with the rest

    # -- waiting -----------------------------------------------------------------------

    def _wait(
        self, task_ids: Sequence[str], deadline: float | None, timeout: float | None
    ) -> list[Meta]:
        unique = list(dict.fromkeys(task_ids))
        ready: dict[str, Meta] = {}
        channels = {self._prefix + TASK_KEY_PREFIX + task_id: task_id for task_id in unique}
        subscriber = self._subscriber()
        try:
            # Subscribed first: what was written before is read next, anything later pushed.
            subscriber.subscribe(channels, deadline)
            self._collect(ready, unique, self.get(unique))
            while len(ready) < len(unique):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                push = subscriber.next_push(remaining)
                if push is not None and text(push[0]) == "message":
                    task_id = channels.get(text(push[1]))
                    if task_id is not None:
                        self._collect(ready, [task_id], [self.codec.decode(push[2])])
        finally:
            subscriber.unsubscribe(channels)
        if len(ready) < len(unique):
            raise TimeoutError(
                f"The operation timed out: {len(unique) - len(ready)} of {len(unique)} "
                f"results not ready after {timeout} s"
            )
        return [ready[task_id].copy() for task_id in task_ids]

    def _subscriber(self) -> Subscriber:
        """This thread's subscriber, kept between waits (a new one after fork or a lost
        connection)."""
        subscriber: Subscriber | None = getattr(self._local, "subscriber", None)
        if subscriber is None or subscriber.pid != os.getpid() or subscriber.broken:
            if subscriber is not None:
                subscriber.close()
            subscriber = self._local.subscriber = Subscriber(self._pool)
        return subscriber

    @staticmethod
    def _collect(
        ready: dict[str, Meta], task_ids: Sequence[str], metas: Sequence[Meta | None]
    ) -> None:
        for task_id, meta in zip(task_ids, metas, strict=True):
            if meta is not None and meta.get("status") in states.READY_STATES:
                ready.setdefault(task_id, meta)

    # -- connection loss ------------------------------------------------------------------

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        return call_with_retry(
            operation,
            what=what,
            where="Redis result backend",
            max_retries=self._max_retries,
            max_delay=_MAX_RETRY_DELAY,
            reset=self._pool.disconnect,
            logger=logger,
        )


def _expiry(expires: float | None) -> tuple[str, int]:
    """The ``SET`` expiry option for ``expires`` seconds: ``EX`` (Celery's SETEX) when whole."""
    if not expires:
        return "", 0
    if float(expires).is_integer():
        return "EX", int(expires)
    return "PX", max(round(expires * 1000), 1)
