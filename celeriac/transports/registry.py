"""URL scheme → transport class, imported on first use so unused drivers stay optional."""

from __future__ import annotations

from collections.abc import Callable

from celeriac.transports.base import Transport, TransportOptions
from celeriac.wire.urls import SchemeRegistry

_TRANSPORTS: SchemeRegistry[Callable[[str, TransportOptions], Transport]] = SchemeRegistry(
    "broker_url",
    "transport",
    {
        "memory": "celeriac.transports.memory:MemoryTransport",
        "sqlite": "celeriac.transports.sqlite:SQLiteTransport",
        "redis": "celeriac.transports.redis:RedisTransport",
        "rediss": "celeriac.transports.redis:RedisTransport",
        "redis+socket": "celeriac.transports.redis:RedisTransport",
        "amqp": "celeriac.transports.amqp:AMQPTransport",
        "amqps": "celeriac.transports.amqp:AMQPTransport",
        "pyamqp": "celeriac.transports.amqp:AMQPTransport",
    },
)


def register_transport(scheme: str, target: str) -> None:
    """Make ``scheme://`` URLs use the transport class at ``"module:Class"``."""
    _TRANSPORTS.register(scheme, target)


def create_transport(url: str, options: TransportOptions | None = None) -> Transport:
    """Create the transport for ``url``; a clear error names an unknown scheme."""
    return _TRANSPORTS.find(url)(url, options or TransportOptions())
