"""URL scheme → transport class, imported on first use so unused drivers stay optional."""

from __future__ import annotations

import difflib
import importlib
from urllib.parse import urlsplit

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import Transport, TransportOptions

#: scheme → "module:Class"
_TRANSPORTS: dict[str, str] = {
    "memory": "celeriac.transports.memory:MemoryTransport",
    "sqlite": "celeriac.transports.sqlite:SQLiteTransport",
    "redis": "celeriac.transports.redis:RedisTransport",
    "rediss": "celeriac.transports.redis:RedisTransport",
    "redis+socket": "celeriac.transports.redis:RedisTransport",
    "amqp": "celeriac.transports.amqp:AMQPTransport",
    "amqps": "celeriac.transports.amqp:AMQPTransport",
    "pyamqp": "celeriac.transports.amqp:AMQPTransport",
}


def register_transport(scheme: str, target: str) -> None:
    """Make ``scheme://`` URLs use the transport class at ``"module:Class"``."""
    _TRANSPORTS[scheme] = target


def scheme_of(url: str) -> str:
    return urlsplit(url).scheme or url.split(":", 1)[0]


def create_transport(url: str, options: TransportOptions | None = None) -> Transport:
    """Create the transport for ``url``; a clear error names an unknown scheme."""
    scheme = scheme_of(url)
    target = _TRANSPORTS.get(scheme)
    if target is None:
        close = difflib.get_close_matches(scheme, _TRANSPORTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ImproperlyConfigured(
            f"broker_url {url!r}: unknown transport {scheme!r}{hint}; "
            f"known: {', '.join(sorted(_TRANSPORTS))}"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"broker_url {url!r} needs a package that is not installed ({exc.name}): "
            f"pip install 'celeriac[{'amqp' if 'amqp' in scheme else scheme.split('+')[0]}]'"
        ) from exc
    cls = getattr(module, class_name)
    transport: Transport = cls(url, options or TransportOptions())
    return transport
