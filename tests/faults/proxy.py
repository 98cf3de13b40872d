"""A loopback TCP proxy whose connections the test can cut, as a failing network would.

asyncio in a thread of its own: ``cut()`` aborts every proxied connection on both sides
(the peers see a reset), and for ``hold`` seconds after it each new connection is closed
as soon as it is accepted, so the worker's reconnects fail for a while before one sticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        #: Both ends of every live proxied connection.
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._refuse_until = 0.0

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def cut(self, hold: float = 0.0) -> tuple[int, float]:
        """Drop every connection now; refuse new ones for ``hold`` seconds. How many were
        dropped, and when (``time.time()`` as the first one went, from the proxy's thread:
        the test's own clock reading could come late on a busy machine)."""
        self._refuse_until = time.monotonic() + hold
        return self._call(self._abort_all())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._call(self._abort_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _abort_all(self) -> tuple[int, float]:
        at = time.time()
        live, self._live = self._live, set()
        for pair in live:
            for writer in pair:
                writer.transport.abort()
        return len(live), at

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._live.add(pair)
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            self._live.discard(pair)
            for end in pair:
                end.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    # One side closed (or was cut): close the other, so neither waits on a half-open link.
    writer.transport.abort()
