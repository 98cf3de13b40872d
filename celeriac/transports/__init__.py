"""Brokers behind one small, batch-first interface (see :mod:`celeriac.transports.base`)."""

from celeriac.transports.base import Capabilities, Transport, TransportOptions
from celeriac.transports.registry import create_transport, register_transport

__all__ = [
    "Capabilities",
    "Transport",
    "TransportOptions",
    "create_transport",
    "register_transport",
]
