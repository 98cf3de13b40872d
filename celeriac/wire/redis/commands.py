"""Commands sent straight on one redis-py connection: the Redis hot paths.

redis-py's client path (pool checkout and release, observability hooks, the retry wrapper,
pipeline objects) cost about 50 µs per command on this machine, more than the loopback
round trip itself (about 30 µs), and a pipeline running a script asks the server whether
it knows the script first: another round trip. The broker's publish, fetch and ack and the
result backend's store therefore go through a :class:`Wire`: the connection's own packer
(hiredis when installed), one ``sendall`` per batch and one parsed reply per command.
Pub/Sub connections (:mod:`celeriac.wire.redis.pubsub`) send and read through one too.
Everything else still uses the redis-py client.

A :class:`Wire` keeps its connection checked out of the pool for its whole life;
``pool.disconnect()`` closes it, and the next command connects again.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script

#: What a command is made of: redis-py's ``EncodableT``, spelled out here because the
#: compiled build reads no third-party annotations (there it would be ``Any``, no type).
Arg = bytes | bytearray | memoryview | str | int | float
#: A reply as redis-py's parser gives it: bytes, int, None, an error, or a list of those.
Reply = Any


class Wire:
    """One connection, used by one thread at a time (a lock keeps it so)."""

    def __init__(self, connection: redis.connection.AbstractConnection) -> None:
        self.connection = connection
        self._lock = threading.Lock()

    def call(self, *args: Arg) -> Reply:
        """One command; its reply (a Redis error reply is raised)."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Reply]:
        """Commands in one round trip; their replies in order.

        Every reply is read even when one is an error, so the connection stays in step;
        the first error is then raised.
        """
        connection = self.connection
        with self._lock:
            self._send(commands)
            replies = []
            error: redis.ResponseError | None = None
            for _ in commands:
                try:
                    replies.append(connection.read_response(disconnect_on_error=True))
                except redis.ResponseError as exc:
                    error = error or exc
                    replies.append(exc)
        if error is not None:
            raise error
        return replies

    def script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Reply:
        """``EVALSHA``, loading the script first if the server does not know it."""
        return self.scripts(script, [(keys, args)])[0]

    def scripts(
        self, script: Script, calls: Sequence[tuple[Sequence[Arg], Sequence[Arg]]]
    ) -> list[Reply]:
        """Many runs of one script (keys, args) in one round trip."""
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
        try:
            return self.pipeline(commands)
        except redis.exceptions.NoScriptError:
            # Nothing ran: every command failed alike. Load it and send them again.
            self.call("SCRIPT", "LOAD", script.script)
            return self.pipeline(commands)

    def send(self, *args: Arg) -> None:
        """One command whose replies come as pushes (``SUBSCRIBE`` and the like): not read
        here, :meth:`receive` reads them."""
        with self._lock:
            self._send([args])

    def receive(self, timeout: float) -> Reply:
        """The next reply or push on the connection, or ``None`` after ``timeout`` seconds."""
        connection = self.connection
        with self._lock:
            if not connection.can_read(timeout=timeout):
                return None
            # Pub/Sub messages are pushes to redis-py's parser: ask for them as replies.
            return connection.read_response(disconnect_on_error=True, push_request=True)

    def _send(self, commands: Sequence[Sequence[Arg]]) -> None:
        connection = self.connection
        if len(commands) == 1:
            packed = connection.pack_command(*commands[0])  # type: ignore[no-untyped-call]
        else:
            packed = connection.pack_commands(commands)  # type: ignore[no-untyped-call]
        connection.send_packed_command(packed, check_health=False)  # type: ignore[no-untyped-call]


class PooledWire:
    """The :class:`Wire` of an owner (a transport, a result backend), made on first use.

    Its connection stays checked out of the owner's pool. Should the owner be dropped
    unclosed inside a reference cycle, the pool's connections are closed before the
    collector finalizes their sockets (which would warn of unclosed sockets).
    """

    def __init__(self, owner: object, pool: redis.ConnectionPool) -> None:
        self._pool = pool
        self._wire: Wire | None = None
        weakref.finalize(owner, pool.disconnect)

    def __call__(self) -> Wire:
        wire = self._wire
        if wire is None:
            wire = self._wire = Wire(self._pool.get_connection())
        return wire
