"""``amqp://`` URLs (kombu's spelling) and TLS settings → :class:`ConnectionParams`."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac.exceptions import ImproperlyConfigured
from celeriac.transports.amqp.connection import ConnectionParams
from celeriac.transports.base import TransportOptions

SCHEMES = ("amqp", "pyamqp", "amqps")
DEFAULT_PORT = 5672
DEFAULT_TLS_PORT = 5671


def parse_urls(url: str, options: TransportOptions) -> list[ConnectionParams]:
    """One or more brokers (``;``-separated URLs are tried in turn, for failover)."""
    return [_parse_one(part.strip(), options) for part in url.split(";") if part.strip()]


def _parse_one(url: str, options: TransportOptions) -> ConnectionParams:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ImproperlyConfigured(f"{url!r} is not an AMQP URL ({', '.join(SCHEMES)})")
    query = dict(parse_qsl(parts.query))
    transport_options = options.transport_options
    ssl_setting = transport_options.get("ssl", query.get("ssl"))
    use_tls = parts.scheme == "amqps" or _truthy(ssl_setting)
    context = make_ssl_context(ssl_setting) if use_tls else None
    server_hostname = None
    if isinstance(ssl_setting, Mapping):
        server_hostname = ssl_setting.get("server_hostname")
    heartbeat = float(query.get("heartbeat", options.heartbeat))
    connect_timeout = float(query.get("connect_timeout", options.connection_timeout))
    return ConnectionParams(
        host=parts.hostname or "localhost",
        port=parts.port or (DEFAULT_TLS_PORT if use_tls else DEFAULT_PORT),
        userid=unquote(parts.username) if parts.username else "guest",
        password=unquote(parts.password) if parts.password else "guest",
        virtual_host=_virtual_host(parts.path),
        ssl_context=context,
        server_hostname=server_hostname,
        heartbeat=heartbeat,
        connect_timeout=connect_timeout,
        client_properties=dict(transport_options.get("client_properties") or {}),
    )


def _virtual_host(path: str) -> str:
    """kombu's rule: the path minus one leading slash; empty means ``/``."""
    vhost = unquote(path[1:] if path.startswith("/") else path)
    return vhost or "/"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes", "on", "required")
    return bool(value)


def make_ssl_context(setting: Any) -> ssl.SSLContext:
    """An ``SSLContext`` from Celery's ``broker_use_ssl`` forms: True, a dict, or a context.

    Dict keys (as in Celery): ``ca_certs``/``cafile``, ``certfile``, ``keyfile``,
    ``cert_reqs`` (``ssl.CERT_NONE`` turns verification off), ``server_hostname``.
    """
    if isinstance(setting, ssl.SSLContext):
        return setting
    context = ssl.create_default_context()
    if not isinstance(setting, Mapping):
        return context
    cafile = setting.get("ca_certs") or setting.get("cafile")
    if cafile:
        context.load_verify_locations(cafile=cafile)
    if setting.get("certfile"):
        context.load_cert_chain(setting["certfile"], setting.get("keyfile"))
    cert_reqs = setting.get("cert_reqs")
    if cert_reqs is not None and int(cert_reqs) == ssl.CERT_NONE:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
