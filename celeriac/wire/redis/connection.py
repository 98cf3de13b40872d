"""Redis connections from Celery's URLs, and the retry loop every network call goes through.

URL forms, as Celery and kombu read them: ``redis://[[user]:password@]host[:port][/db]``,
``rediss://…`` (TLS) and ``redis+socket:///path/to/redis.sock[?virtual_host=N]``.

* The database is ``?db=N`` (redis-py's spelling) when given, else the number in the path
  (kombu's virtual host), else ``?virtual_host=N`` (Celery's spelling for socket URLs,
  whose path names the socket); 0 without any of them.
* TLS options (``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``)
  need ``rediss://``, as in Celery. ``ssl_cert_reqs`` takes the spellings Celery and kombu
  take, ``CERT_REQUIRED``, ``CERT_OPTIONAL``, ``CERT_NONE`` or ``required``, ``optional``,
  ``none``, and nothing else: a URL both read means the same to both. Without it the
  server's certificate is verified (redis-py's default), where kombu would not verify and
  Celery's result backend refuses the URL.
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
from celeriac.wire.urls import safe_url

T = TypeVar("T")

#: Errors after which a new connection may succeed. Wrong credentials are not among them
#: (redis-py files them under ConnectionError): retrying those only delays the real error.
RETRYABLE: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
NOT_RETRYABLE: tuple[type[Exception], ...] = (
    redis.AuthenticationError,
    redis.exceptions.AuthorizationError,
)

#: ``ssl_cert_reqs`` as Celery and kombu spell it → as redis-py does.
_CERT_REQS = {
    "CERT_REQUIRED": "required",
    "CERT_OPTIONAL": "optional",
    "CERT_NONE": "none",
    "required": "required",
    "optional": "optional",
    "none": "none",
}
_TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def redis_py_url(url: str, setting: str) -> str:
    """Rewrite a Celery Redis URL into one ``redis.ConnectionPool.from_url`` reads.

    ``setting`` names where the URL came from (``broker_url``), for the error a bad one gets.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    if parts.scheme == "redis+socket":
        scheme, netloc, path = "unix", "", parts.netloc + parts.path
    elif parts.scheme in ("redis", "rediss"):
        scheme, netloc, path = parts.scheme, parts.netloc, ""
        if not parts.hostname:  # ``redis://`` or ``redis://:secret@``: the local server
            userinfo, _, port = netloc.rpartition("@")
            netloc = (f"{userinfo}@" if userinfo else "") + "localhost" + port
        if parts.path.strip("/"):
            query.setdefault("db", parts.path.strip("/"))
    else:
        raise ImproperlyConfigured(f"{setting} {safe_url(url)!r} is not a Redis URL")
    virtual_host = query.pop("virtual_host", None)
    if virtual_host is not None:
        query.setdefault("db", virtual_host.strip("/") or "0")
    if not query.get("db", "0").isdigit():
        raise ImproperlyConfigured(
            f"{setting} {safe_url(url)!r}: {query['db']!r} is not a database number"
        )
    _check_tls_options(query, parts.scheme, url, setting)
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


def _check_tls_options(query: dict[str, str], scheme: str, url: str, setting: str) -> None:
    """Refuse TLS options without TLS; ``ssl_cert_reqs`` in redis-py's spelling."""
    given = [name for name in _TLS_OPTIONS if name in query]
    if given and scheme != "rediss":
        raise ImproperlyConfigured(
            f"{setting} {safe_url(url)!r}: {', '.join(given)} need a rediss:// URL"
        )
    if "ssl_cert_reqs" in query:
        value = query["ssl_cert_reqs"]
        if value not in _CERT_REQS:
            raise ImproperlyConfigured(
                f"{setting} {safe_url(url)!r}: ssl_cert_reqs={value!r}; use CERT_REQUIRED, "
                "CERT_OPTIONAL or CERT_NONE (or required, optional, none)"
            )
        query["ssl_cert_reqs"] = _CERT_REQS[value]


def connection_pool(
    url: str,
    setting: str,
    *,
    connect_timeout: float,
    socket_timeout: float | None,
    health_check_interval: int = 0,
    max_connections: int | None = None,
) -> redis.ConnectionPool:
    """A pool for ``url``. redis-py's own retries are off: :func:`call_with_retry` decides."""
    return redis.ConnectionPool.from_url(
        redis_py_url(url, setting),
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=health_check_interval,
        max_connections=max_connections,
    )


def database_of(pool: redis.ConnectionPool) -> int:
    return int(pool.connection_kwargs.get("db", 0) or 0)


def backoff(attempt: int, max_delay: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, …): 0.1 s doubling up to
    ``max_delay``."""
    return float(min(0.1 * 2 ** (attempt - 1), max_delay))


def call_with_retry(
    operation: Callable[[], T],
    *,
    what: str,
    where: str,
    max_retries: int | None,
    max_delay: float,
    reset: Callable[[], None],
    logger: logging.Logger,
) -> T:
    """Run ``operation``; on a lost connection, ``reset`` and retry with :func:`backoff`.

    One warning line per retry on the caller's ``logger``, no traceback, starting with
    ``where`` (``Redis at …``).
    ``max_retries=None`` retries for ever. When the retries are used up, raises the
    builtin :class:`ConnectionError` (chained to redis-py's), which callers of any
    transport or result backend can catch.
    """
    attempt = 0
    while True:
        try:
            return operation()
        except NOT_RETRYABLE:
            raise
        except RETRYABLE as exc:
            attempt += 1
            reset()
            if max_retries is not None and attempt > max_retries:
                raise ConnectionError(
                    f"{where}: {what} failed after {attempt - 1} retries: {exc}"
                ) from exc
            delay = backoff(attempt, max_delay)
            logger.warning(
                "%s: %s failed (%s); retry %d/%s in %.1f s",
                where,
                what,
                exc,
                attempt,
                "inf" if max_retries is None else max_retries,
                delay,
            )
            time.sleep(delay)
