"""Result stores behind one small, batch-first interface (see :mod:`celeriac.backends.base`)."""

from celeriac.backends.base import BackendCapabilities, BackendOptions, ChordMember, ResultBackend
from celeriac.backends.registry import create_backend, register_backend
from celeriac.protocol.results import Meta

__all__ = [
    "BackendCapabilities",
    "BackendOptions",
    "ChordMember",
    "Meta",
    "ResultBackend",
    "create_backend",
    "register_backend",
]
