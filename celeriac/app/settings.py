"""``app.conf``: a mapping of settings with attribute access, loaded eagerly.

Precedence, highest first, as Celery documents it: changes made at runtime (constructor
arguments, ``conf.update``, attribute or item assignment); configuration objects
(``config_from_object``, later ones over earlier ones); the ``CELERY_BROKER_URL``,
``CELERY_BROKER_READ_URL``, ``CELERY_BROKER_WRITE_URL`` and ``CELERY_RESULT_BACKEND``
environment variables; defaults (the table, then ``add_defaults``).
Unlike Celery, an environment variable never beats a value given in code, and
``config_from_object`` loads at once, so a bad path fails where it is called rather than on
first use.

The mapping itself always holds the winning value of every setting, so reading a setting is
a plain dict lookup; the layers are kept beside it to decide what a later write may replace.
"""

from __future__ import annotations

import copy
import importlib
import os
import types
from collections.abc import Iterator, Mapping
from typing import Any

from celeriac.app.defaults import DEFAULTS, OLD_NAMES
from celeriac.exceptions import ImproperlyConfigured

_ENVIRONMENT_FALLBACKS = {
    "broker_url": "CELERY_BROKER_URL",
    "broker_read_url": "CELERY_BROKER_READ_URL",
    "broker_write_url": "CELERY_BROKER_WRITE_URL",
    "result_backend": "CELERY_RESULT_BACKEND",
}


class Settings(dict[str, Any]):
    """Celery's ``app.conf``: ``conf.task_serializer`` and ``conf['task_serializer']`` alike."""

    _changes: dict[str, Any]
    _config: dict[str, Any]

    def __init__(self) -> None:
        # Deep-copied: a default such as ``beat_schedule`` is a dict users mutate in place.
        super().__init__(copy.deepcopy(DEFAULTS))
        object.__setattr__(self, "_changes", {})
        object.__setattr__(self, "_config", {})
        for name, variable in _ENVIRONMENT_FALLBACKS.items():
            value = os.environ.get(variable)
            if value:
                super().__setitem__(name, value)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no setting named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __setitem__(self, name: str, value: Any) -> None:
        name = OLD_NAMES.get(name, name)
        self._changes[name] = value
        super().__setitem__(name, value)

    def __reduce__(self) -> Any:
        return (_restore_settings, (dict(self), self._config, self._changes))

    def update(self, other: Any = (), /, **values: Any) -> None:
        items = dict(other, **values)
        for name, value in items.items():
            self[name] = value

    def load_config(self, values: Mapping[str, Any]) -> None:
        """Apply settings read from a configuration object: runtime changes stay on top."""
        for name, value in values.items():
            name = OLD_NAMES.get(name, name)
            self._config[name] = value
            if name not in self._changes:
                super().__setitem__(name, value)

    def add_defaults(self, values: Mapping[str, Any]) -> None:
        """Add defaults (for extensions): they never replace a configured value."""
        for name, value in values.items():
            name = OLD_NAMES.get(name, name)
            if not self.is_set(name):
                super().__setitem__(name, value)

    def setdefault(self, name: str, default: Any = None) -> Any:
        name = OLD_NAMES.get(name, name)
        if name not in self:
            self[name] = default
        return self[name]

    def is_set(self, name: str) -> bool:
        """Whether the setting was given explicitly (not a default)."""
        return name in self._changes or name in self._config

    def changes(self) -> dict[str, Any]:
        """The explicitly given settings (what ``celeriac report`` shows)."""
        return {name: self[name] for name in sorted({*self._config, *self._changes})}

    def find_option(self, name: str) -> str:
        """Resolve an old or namespaced name to the setting name."""
        return OLD_NAMES.get(name, name)


def _restore_settings(
    values: dict[str, Any], config: dict[str, Any], changes: dict[str, Any]
) -> Settings:
    settings = Settings.__new__(Settings)
    dict.update(settings, values)
    object.__setattr__(settings, "_config", dict(config))
    object.__setattr__(settings, "_changes", dict(changes))
    return settings


def settings_from_object(source: Any, namespace: str | None = None) -> dict[str, Any]:
    """Read settings from a module, class, mapping or import path (``'pkg.mod:attr'``).

    With ``namespace='CELERY'`` only names prefixed ``CELERY_`` are read, without the
    prefix and lower-cased (the Django convention: ``CELERY_BROKER_URL`` → ``broker_url``).
    Without a namespace, lower-case setting names and Celery's old upper-case names are read.
    """
    obj = _resolve(source) if isinstance(source, str) else source
    items = _items(obj)
    found: dict[str, Any] = {}
    prefix = f"{namespace}_" if namespace else None
    for key, value in items:
        if prefix is not None:
            if key.startswith(prefix):
                name = key[len(prefix) :].lower()
                found[OLD_NAMES.get(key, name) if name not in DEFAULTS else name] = value
        elif key in OLD_NAMES:
            found[OLD_NAMES[key]] = value
        elif key.islower() and not key.startswith("_"):
            found[key] = value
    return found


def _items(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        yield from ((str(key), value) for key, value in obj.items())
        return
    for key in dir(obj):
        if key.startswith("__"):
            continue
        try:
            value = getattr(obj, key)
        except Exception:  # lazy settings objects (Django) may raise for some names
            continue
        if not isinstance(value, types.ModuleType):  # `import os` in a config module
            yield key, value


def _resolve(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if attribute or "." not in module_name or exc.name != module_name:
            raise ImproperlyConfigured(f"cannot import configuration {path!r}: {exc}") from exc
        # 'pkg.module.attr' written with a dot: try the last part as an attribute.
        module_name, _, attribute = module_name.rpartition(".")
        try:
            obj = importlib.import_module(module_name)
        except ImportError:
            raise ImproperlyConfigured(f"cannot import configuration {path!r}: {exc}") from exc
    except ImportError as exc:  # the module exists but an import inside it failed
        raise ImproperlyConfigured(f"cannot import configuration {path!r}: {exc}") from exc
    for part in filter(None, attribute.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ImproperlyConfigured(f"configuration {path!r}: {exc}") from exc
    return obj
