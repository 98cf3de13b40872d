"""Redis connections from broker URLs, and the retry loop every network call goes through.

URL forms (kombu's): ``redis://[[user]:password@]host[:port][/db]``, ``rediss://…`` (TLS;
``ssl_cert_reqs=CERT_REQUIRED|CERT_OPTIONAL|CERT_NONE`` or redis-py's lower-case names in
the query), ``redis+socket:///path/to/redis.sock[?db=N]`` (also ``virtual_host=N``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.base import TransportOptions

logger = logging.getLogger("celeriac.transports.redis")

T = TypeVar("T")

#: Errors after which a new connection may succeed. Wrong credentials are not among them
#: (redis-py files them under ConnectionError): retrying those only delays the real error.
RETRYABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
_NOT_RETRYABLE: tuple[type[Exception], ...] = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
)

_CERT_REQS = {"cert_required": "required", "cert_optional": "optional", "cert_none": "none"}


def redis_py_url(url: str) -> str:
    """Rewrite a kombu-style broker URL into one ``redis.ConnectionPool.from_url`` reads."""
    parts = urlsplit(url)
    scheme = parts.scheme
    query = dict(parse_qsl(parts.query))
    virtual_host = query.pop("virtual_host", None)
    if virtual_host is not None:
        query.setdefault("db", virtual_host.lstrip("/") or "0")
    if "ssl_cert_reqs" in query:
        value = query["ssl_cert_reqs"]
        query["ssl_cert_reqs"] = _CERT_REQS.get(value.lower(), value)
    if scheme == "redis+socket":
        scheme, netloc, path = "unix", "", parts.netloc + parts.path
    elif scheme in ("redis", "rediss"):
        netloc = parts.netloc
        if not parts.hostname:  # ``redis://`` or ``redis://:secret@``: the local server
            userinfo, _, port = netloc.rpartition("@")
            netloc = (f"{userinfo}@" if userinfo else "") + "localhost" + port
        path = parts.path
        if path not in ("", "/"):
            db = path.strip("/")
            if not db.isdigit():
                raise ImproperlyConfigured(f"{safe_url(url)}: the path must be a database number")
            query.setdefault("db", db)
        path = ""
    else:
        raise ImproperlyConfigured(f"{safe_url(url)}: not a Redis URL")
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


def connection_pool(
    url: str, options: TransportOptions, socket_timeout: float | None = 30.0
) -> redis.ConnectionPool:
    """A pool for ``url``. redis-py's own retries are off: :func:`call_with_retry` decides."""
    extra = options.transport_options
    return redis.ConnectionPool.from_url(
        redis_py_url(url),
        socket_connect_timeout=options.connection_timeout,
        socket_timeout=extra.get("socket_timeout", socket_timeout),
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=int(extra.get("health_check_interval", 0)),
        max_connections=extra.get("max_connections"),
    )


def database_of(pool: redis.ConnectionPool) -> int:
    return int(pool.connection_kwargs.get("db", 0) or 0)


def safe_url(url: str) -> str:
    """``url`` with its password masked, for log lines and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backoff(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, …): 0.1 s doubling up to 5 s."""
    return float(min(0.1 * 2 ** (attempt - 1), 5.0))


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    url: str,
    options: TransportOptions,
    reset: Callable[[], None],
) -> T:
    """Run ``operation``; on a lost connection, ``reset`` and retry with backoff.

    One warning line per retry, no traceback. When retries are off or used up, raises the
    builtin :class:`ConnectionError` (chained to redis-py's), which callers of any
    transport can catch.
    """
    attempt = 0
    limit = options.connection_max_retries if options.connection_retry else 0
    while True:
        try:
            return operation()
        except _NOT_RETRYABLE:
            raise
        except RETRYABLE as exc:
            attempt += 1
            reset()
            if limit is not None and attempt > limit:
                raise ConnectionError(
                    f"Redis at {safe_url(url)}: {what} failed after {attempt - 1} retries: {exc}"
                ) from exc
            delay = backoff(attempt)
            logger.warning(
                "Redis at %s: %s failed (%s); retry %d/%s in %.1f s",
                safe_url(url),
                what,
                exc,
                attempt,
                "inf" if limit is None else limit,
                delay,
            )
            time.sleep(delay)
