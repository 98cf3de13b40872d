"""The in-process transport under the conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.transports.base import TransportOptions
from celeriac.transports.memory import MemoryTransport

NAME = "memory"
#: Holders are instances: close() requeues at once and nothing else ever does.
HOLD_SECONDS = 0.3


def make_transport(tmp_path: Path, request: pytest.FixtureRequest) -> MemoryTransport:
    # The test's temporary directory names a broker of its own.
    return MemoryTransport(f"memory://conformance{tmp_path}", TransportOptions())
