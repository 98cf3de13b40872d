"""Result stores behind one small, batch-first interface (see :mod:`celeriac.backends.base`)."""

from celeriac.backends.base import BackendCapabilities, BackendOptions, Meta, ResultBackend
from celeriac.backends.registry import create_backend, register_backend

__all__ = [
    "BackendCapabilities",
    "BackendOptions",
    "Meta",
    "ResultBackend",
    "create_backend",
    "register_backend",
]
