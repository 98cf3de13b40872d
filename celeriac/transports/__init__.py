"""Brokers behind one small, batch-first interface (see :mod:`celeriac.transports.base`)."""

from celeriac.transports.base import Capabilities, Delivery, QueueSpec, Transport, TransportOptions
from celeriac.transports.registry import create_transport, register_transport

__all__ = [
    "Capabilities",
    "Delivery",
    "QueueSpec",
    "Transport",
    "TransportOptions",
    "create_transport",
    "register_transport",
]
