"""URL scheme → result backend class, imported on first use."""

from __future__ import annotations

from collections.abc import Callable

from celeriac.backends.base import BackendOptions, ResultBackend
from celeriac.wire.urls import SchemeRegistry

#: ``db+sqlite`` follows Celery's database-backend URL form.
_BACKENDS: SchemeRegistry[Callable[[str, BackendOptions], ResultBackend]] = SchemeRegistry(
    "result_backend",
    "backend",
    {
        "disabled": "celeriac.backends.disabled:DisabledBackend",
        "memory": "celeriac.backends.memory:MemoryBackend",
        "cache+memory": "celeriac.backends.memory:MemoryBackend",
        "sqlite": "celeriac.backends.sqlite:SQLiteBackend",
        "db+sqlite": "celeriac.backends.sqlite:SQLiteBackend",
        "redis": "celeriac.backends.redis:RedisBackend",
        "rediss": "celeriac.backends.redis:RedisBackend",
        "redis+socket": "celeriac.backends.redis:RedisBackend",
        "rpc": "celeriac.backends.rpc:RPCBackend",
    },
)


def register_backend(scheme: str, target: str) -> None:
    """Make ``scheme://`` result URLs use the backend class at ``"module:Class"``."""
    _BACKENDS.register(scheme, target)


def create_backend(url: str | None, options: BackendOptions | None = None) -> ResultBackend:
    """Create the backend for ``url`` (``None`` or empty: results are disabled)."""
    url = url or "disabled://"
    return _BACKENDS.find(url)(url, options or BackendOptions())
