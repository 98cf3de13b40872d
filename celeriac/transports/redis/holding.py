"""Reserved messages held per consumer, and given back when that consumer is gone.

kombu keeps reserved messages in one ``unacked`` hash and puts them back after a fixed
``visibility_timeout`` (an hour), even while their worker is still busy with them: long
tasks and ETA tasks run twice. celeriac ties redelivery to the holder's *liveness* instead:

* every consuming transport has an id, a heartbeat key ``celeriac.alive.<id>`` (TTL
  ``holder_expires``, refreshed every ``holder_heartbeat_interval`` by a small thread) and a
  hash ``celeriac.held.<id>`` of what it reserved: tag → ``<len>:<list key><envelope>``;
* :data:`FETCH` pops messages and records them in that hash in one script, so a message is
  always in a queue or in a holder's hash, never only in a client's memory;
* every ``holder_check_interval`` the thread looks for holders whose heartbeat expired and
  puts their messages back at the front of their lists, flagged redelivered.

kombu peers never read these keys (so they cannot restore celeriac's messages after an
hour), and celeriac never touches kombu's ``unacked`` hash (kombu restores its own).

A consumer whose heartbeat thread cannot run for longer than ``holder_expires`` (stopped
with SIGSTOP, or a C extension holding the GIL that long) is taken for dead and its
messages go to others; it logs a warning when it notices. Raise ``holder_expires`` for such
workloads.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Sequence

import redis
from redis.commands.core import Script

from celeriac.transports.redis.envelope import mark_redelivered
from celeriac.transports.redis.keyspace import KeySpace
from celeriac.wire.redis.connection import RETRYABLE

logger = logging.getLogger("celeriac.transports.redis")

#: Largest number of messages one fetch script moves (or acks first): bounds the script's
#: run time and Lua's ``unpack`` (limited to a few thousand values).
MAX_FETCH = 1000
#: Messages per requeue script call, for the same reasons.
_REQUEUE_CHUNK = 500

#: KEYS: held hash, alive key, holders set, then the lists in the order to drain them.
#: ARGV: limit, first tag, alive TTL in ms, holder id, then the tags to ack first.
#: Returns {list position (1-based), envelope, …}; the tags are first tag, first tag + 1, …
FETCH = """
if #ARGV > 4 then redis.call('HDEL', KEYS[1], unpack(ARGV, 5)) end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
local limit = tonumber(ARGV[1])
local tag = tonumber(ARGV[2])
local taken, out, held = 0, {}, {}
for i = 4, #KEYS do
    if taken >= limit then break end
    local items = redis.call('RPOP', KEYS[i], limit - taken)
    if items then
        local source = #KEYS[i] .. ':' .. KEYS[i]
        for _, raw in ipairs(items) do
            held[#held + 1] = tag + taken
            held[#held + 1] = source .. raw
            out[#out + 1] = i - 3
            out[#out + 1] = raw
            taken = taken + 1
        end
    end
end
if taken > 0 then redis.call('HSET', KEYS[1], unpack(held)) end
if taken < limit then
    -- Every list is empty now. Reading their lengths makes Redis track them for this
    -- connection (reads in scripts count, pops do not): the next push wakes the doorbell.
    for i = 4, #KEYS do redis.call('LLEN', KEYS[i]) end
end
return out
"""

#: KEYS: held hash, alive key, holders set. ARGV: only-if-dead flag ('1'/'0'), holder id,
#: then (tag, list key, envelope) triples. Each tag still held is removed and its envelope
#: pushed back at the front of its list (RPUSH: consumers pop from the right). Returns how
#: many moved, or -1 when only-if-dead was asked and the holder is alive after all.
REQUEUE = """
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local moved = 0
for i = 3, #ARGV, 3 do
    if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
        redis.call('RPUSH', ARGV[i + 1], ARGV[i + 2])
        moved = moved + 1
    end
end
if ARGV[1] == '1' and redis.call('HLEN', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[2])
end
return moved
"""

#: KEYS: holders set. ARGV: the holder key prefix. Forgets dead holders that hold nothing
#: and returns the ids of dead holders that still hold messages.
FIND_DEAD = """
local dead = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if redis.call('EXISTS', ARGV[1] .. 'alive.' .. id) == 0 then
        if redis.call('HLEN', ARGV[1] .. 'held.' .. id) == 0 then
            redis.call('SREM', KEYS[1], id)
        else
            dead[#dead + 1] = id
        end
    end
end
return dead
"""


class Scripts:
    """The scripts, registered on one client (redis-py loads them on first use)."""

    def __init__(self, client: redis.Redis) -> None:
        self.fetch: Script = client.register_script(FETCH)
        self.requeue: Script = client.register_script(REQUEUE)
        self.find_dead: Script = client.register_script(FIND_DEAD)


def split_held(value: bytes | str) -> tuple[bytes, bytes]:
    """``<len>:<list key><envelope>`` → (list key, envelope)."""
    if isinstance(value, str):  # only with decode_responses, which celeriac never sets
        value = value.encode()
    colon = value.index(b":")
    end = colon + 1 + int(value[:colon])
    return value[colon + 1 : end], value[end:]


def requeue_held(
    client: redis.Redis,
    scripts: Scripts,
    keys: KeySpace,
    holder: str,
    tags: Sequence[int] | None = None,
    *,
    only_if_dead: bool = False,
) -> int:
    """Put messages ``holder`` holds (``tags``, or all) back at the front of their lists.

    Oldest first: the message reserved first is fetched first again. Returns how many moved
    (-1: ``only_if_dead`` and the holder turned out to be alive).
    """
    held_key = keys.held_key(holder)
    if tags is None:
        found = sorted((int(tag), value) for tag, value in client.hgetall(held_key).items())
    else:
        values = client.hmget(held_key, list(tags)) if tags else []
        found = sorted((tag, value) for tag, value in zip(tags, values, strict=True) if value)
    # RPUSH appends at the consumers' end, so the newest goes first and the oldest last.
    found.reverse()
    moved = 0
    for start in range(0, len(found), _REQUEUE_CHUNK):
        args: list[bytes | str | int] = [b"1" if only_if_dead else b"0", holder]
        for tag, value in found[start : start + _REQUEUE_CHUNK]:
            list_key, raw = split_held(value)
            args += [tag, list_key, mark_redelivered(raw)]
        result = int(
            scripts.requeue(
                keys=[held_key, keys.alive_key(holder), keys.holders_key],
                args=args,
                client=client,
            )
        )
        if result < 0:
            return -1
        moved += result
    return moved


def release_holder(client: redis.Redis, scripts: Scripts, keys: KeySpace, holder: str) -> None:
    """Give back everything ``holder`` holds and forget it: its consumer is going away."""
    requeue_held(client, scripts, keys, holder)
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.alive_key(holder))
    pipe.srem(keys.holders_key, holder)
    pipe.execute()


def reclaim_dead_holders(client: redis.Redis, scripts: Scripts, keys: KeySpace) -> int:
    """Give back what consumers whose heartbeat expired still hold; how many messages."""
    dead = scripts.find_dead(keys=[keys.holders_key], args=[keys.holder_prefix], client=client)
    total = 0
    for raw_id in dead:
        holder = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        moved = requeue_held(client, scripts, keys, holder, only_if_dead=True)
        if moved > 0:
            logger.warning(
                "Redis: consumer %s stopped without returning %d message(s); "
                "they are back in their queues, marked redelivered",
                holder,
                moved,
            )
            total += moved
    return total


class Heartbeat(threading.Thread):
    """Keeps one holder alive, and looks for dead ones, until :meth:`stop`.

    A thread rather than the fetch loop: a worker busy with long tasks may not fetch for
    hours, and its messages must stay its own all that time.
    """

    def __init__(
        self,
        owner: object,
        client: redis.Redis,
        scripts: Scripts,
        keys: KeySpace,
        holder: str,
        *,
        interval: float,
        expires: float,
        check_interval: float,
    ) -> None:
        super().__init__(name=f"celeriac-redis-heartbeat-{holder[:8]}", daemon=True)
        # Weak: a transport dropped without close() must not be kept alive by its heartbeat.
        self._owner = weakref.ref(owner)
        self._client = client
        self._scripts = scripts
        self._keys = keys
        self._holder = holder
        self._interval = interval
        self._expires_ms = max(int(expires * 1000), 1)
        self._check_every = max(1, round(check_interval / interval))
        self._stopped = threading.Event()
        self._failing = False

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5.0)

    def run(self) -> None:
        beats = 0
        while not self._stopped.is_set():
            if self._owner() is None:
                self._release_abandoned()
                return
            try:
                self._beat(first=beats == 0)
                if beats % self._check_every == 0:
                    reclaim_dead_holders(self._client, self._scripts, self._keys)
                if self._failing:
                    logger.warning("Redis: holder heartbeat %s restored", self._holder)
                    self._failing = False
            except RETRYABLE as exc:
                if not self._failing:  # one line per outage, not one per beat
                    logger.warning(
                        "Redis: holder heartbeat %s failed (%s); its reserved messages go "
                        "back to their queues if this lasts longer than %.1f s",
                        self._holder,
                        exc,
                        self._expires_ms / 1000,
                    )
                    self._failing = True
                self._client.connection_pool.disconnect()
            except Exception:  # never let the thread die: the holder would look dead
                logger.exception("Redis: holder heartbeat %s", self._holder)
            beats += 1
            self._stopped.wait(self._interval)

    def _release_abandoned(self) -> None:
        try:
            release_holder(self._client, self._scripts, self._keys, self._holder)
            logger.warning(
                "Redis: a transport was dropped without close(); its reserved messages are "
                "back in their queues"
            )
        except RETRYABLE:  # the server is away: its heartbeat expires, others reclaim
            pass
        self._client.connection_pool.disconnect()

    def _beat(self, first: bool) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._keys.alive_key(self._holder), b"1", px=self._expires_ms, get=True)
        pipe.sadd(self._keys.holders_key, self._holder)
        previous, _ = pipe.execute()
        if previous is None and not first:
            logger.warning(
                "Redis: holder %s was silent for more than %.1f s; messages it held may "
                "have been redelivered to other consumers",
                self._holder,
                self._expires_ms / 1000,
            )
