"""The rpc:// result backend under the conformance suite, over an SQLite broker.

RPC results are replies: a worker sends each meta to the client named by the task's
``reply_to``, and only that client reads it. Here every instance of one test is the same
client (one oid), and ``store`` plays the worker replying to it, so "stored" results are
the ones sent to this client. What replies cannot do (groups, chords, being read by any
process that opens the store) is skipped by the suite through the capabilities.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from celeriac.backends.base import BackendOptions
from celeriac.backends.rpc import RPCBackend
from celeriac.transports.base import TransportOptions
from celeriac.transports.sqlite import SQLiteTransport

NAME = "rpc"


class RepliesToItself(RPCBackend):
    """Stores as a worker replying to this client: metas get its oid as ``reply_to``."""

    def store(self, metas: Sequence[Mapping[str, Any]]) -> None:
        super().store([{"reply_to": self.oid, **meta} for meta in metas])


def make_backend(
    tmp_path: Path, request: pytest.FixtureRequest, options: BackendOptions
) -> RPCBackend:
    broker_url = f"sqlite:///{tmp_path / 'broker.db'}"

    def open_broker() -> SQLiteTransport:
        return SQLiteTransport(broker_url, TransportOptions())

    oid = str(uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path)))  # one client per test
    return RepliesToItself("rpc://", options, transport_factory=open_broker, oid=oid)
