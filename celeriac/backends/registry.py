"""URL scheme → result backend class, imported on first use."""

from __future__ import annotations

import difflib
import importlib
from urllib.parse import urlsplit

from celeriac.backends.base import BackendOptions, ResultBackend
from celeriac.exceptions import ImproperlyConfigured

#: scheme → "module:Class". ``db+sqlite`` follows Celery's database-backend URL form.
_BACKENDS: dict[str, str] = {
    "disabled": "celeriac.backends.disabled:DisabledBackend",
    "memory": "celeriac.backends.memory:MemoryBackend",
    "cache+memory": "celeriac.backends.memory:MemoryBackend",
    "sqlite": "celeriac.backends.sqlite:SQLiteBackend",
    "db+sqlite": "celeriac.backends.sqlite:SQLiteBackend",
    "redis": "celeriac.backends.redis:RedisBackend",
    "rediss": "celeriac.backends.redis:RedisBackend",
    "redis+socket": "celeriac.backends.redis:RedisBackend",
    "rpc": "celeriac.backends.rpc:RPCBackend",
}


def register_backend(scheme: str, target: str) -> None:
    """Make ``scheme://`` result URLs use the backend class at ``"module:Class"``."""
    _BACKENDS[scheme] = target


def create_backend(url: str | None, options: BackendOptions | None = None) -> ResultBackend:
    """Create the backend for ``url`` (``None`` or empty: results are disabled)."""
    url = url or "disabled://"
    scheme = urlsplit(url).scheme or url.split(":", 1)[0]
    target = _BACKENDS.get(scheme)
    if target is None:
        close = difflib.get_close_matches(scheme, _BACKENDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ImproperlyConfigured(
            f"result_backend {url!r}: unknown backend {scheme!r}{hint}; "
            f"known: {', '.join(sorted(_BACKENDS))}"
        )
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"result_backend {url!r} needs a package that is not installed ({exc.name})"
        ) from exc
    backend: ResultBackend = getattr(module, class_name)(url, options or BackendOptions())
    return backend
