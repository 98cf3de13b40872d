"""The embedded SQLite transport under the conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.transports.base import TransportOptions
from celeriac.transports.sqlite import SQLiteTransport

NAME = "sqlite"
#: Consumers look for dead holders once a second: two looks and a margin.
HOLD_SECONDS = 2.3
DEAD_HOLDER_SECONDS = 5.0


def make_transport(tmp_path: Path, request: pytest.FixtureRequest) -> SQLiteTransport:
    # tmp_path is absolute, so this is the four-slash form: sqlite:////tmp/.../broker.db
    return SQLiteTransport(f"sqlite:///{tmp_path}/broker.db", TransportOptions())
