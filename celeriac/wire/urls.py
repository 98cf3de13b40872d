"""Broker and result-store URLs: a form safe to print, and the scheme registry that turns a
URL into the class that serves it."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar
from urllib.parse import urlsplit, urlunsplit

from celeriac.exceptions import ImproperlyConfigured

Factory = TypeVar("Factory", bound=Callable[..., object])

#: Missing package → the celeriac extra that installs it.
_EXTRAS = {"redis": "redis", "hiredis": "redis", "pika": "amqp"}


def safe_url(url: str) -> str:
    """``url`` with its password masked, for log lines and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class SchemeRegistry(Generic[Factory]):
    """URL scheme → the class at ``"module:Class"``, imported on first use, so that the
    drivers of brokers and stores nobody uses need not be installed."""

    def __init__(self, setting: str, kind: str, targets: Mapping[str, str]) -> None:
        #: The setting URLs come from and what they name, for error messages.
        self._setting = setting
        self._kind = kind
        self._targets = dict(targets)

    def register(self, scheme: str, target: str) -> None:
        """Make ``scheme://`` URLs use the class at ``"module:Class"``."""
        self._targets[scheme] = target

    def find(self, url: str) -> Factory:
        """The class for ``url``; a clear error names an unknown scheme or a missing driver."""
        scheme = urlsplit(url).scheme or url.split(":", 1)[0]
        target = self._targets.get(scheme)
        if target is None:
            close = difflib.get_close_matches(scheme, self._targets, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ImproperlyConfigured(
                f"{self._setting} {safe_url(url)!r}: unknown {self._kind} {scheme!r}{hint}; "
                f"known: {', '.join(sorted(self._targets))}"
            )
        module_name, class_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = _EXTRAS.get(exc.name or "")
            hint = f": pip install 'celeriac[{extra}]'" if extra else ""
            raise ImproperlyConfigured(
                f"{self._setting} {safe_url(url)!r} needs a package that is not installed "
                f"({exc.name}){hint}"
            ) from exc
        factory: Factory = getattr(module, class_name)
        return factory
