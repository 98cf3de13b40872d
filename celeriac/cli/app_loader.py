"""Finding the app named by ``-A``/``--app``, the way Celery finds it.

``module:attr`` (or ``module.attr``) names it directly. A bare module is searched for an
attribute ``app`` or ``celery`` that is an app, then a submodule ``<module>.celery``, then
any app instance in the module.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

from celeriac.app.base import Celery
from celeriac.exceptions import ImproperlyConfigured


def find_app(name: str) -> Celery:
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name or "." not in module_name:
            raise ImproperlyConfigured(f"-A {name}: cannot import {module_name!r}: {exc}") from exc
        # 'pkg.app' where 'app' is an attribute, not a module
        parent, _, attribute = module_name.rpartition(".")
        module = importlib.import_module(parent)
    if attribute:
        found = _resolve_attribute(module, attribute, name)
        if isinstance(found, Celery):
            return found
        if isinstance(found, ModuleType):
            return _search_module(found, name)
        if callable(found):
            made = found()
            if isinstance(made, Celery):
                return made
        raise ImproperlyConfigured(f"-A {name}: {attribute!r} is not a celeriac app")
    return _search_module(module, name)


def _resolve_attribute(module: ModuleType, attribute: str, name: str) -> Any:
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            try:
                found = importlib.import_module(f"{found.__name__}.{part}")
            except (ImportError, AttributeError):
                raise ImproperlyConfigured(f"-A {name}: no attribute {part!r}") from None
    return found


def _named_app(module: ModuleType) -> Celery | None:
    for attribute in ("app", "celery"):
        found = getattr(module, attribute, None)
        if isinstance(found, Celery):
            return found
    return None


def _any_app(module: ModuleType) -> Celery | None:
    for value in vars(module).values():
        if isinstance(value, Celery):
            return value
    return None


def _search_module(module: ModuleType, name: str) -> Celery:
    found = _named_app(module)
    if found is None and hasattr(module, "__path__"):
        submodule_name = f"{module.__name__}.celery"
        try:
            submodule = importlib.import_module(submodule_name)
        except ModuleNotFoundError as exc:
            if exc.name != submodule_name:  # it exists, but an import inside it failed
                raise
        else:
            found = _named_app(submodule) or _any_app(submodule)
    found = found or _any_app(module)
    if found is None:
        raise ImproperlyConfigured(
            f"-A {name}: no celeriac app found in module {module.__name__!r} "
            "(looked for 'app', 'celery', a 'celery' submodule and any Celery instance)"
        )
    return found
