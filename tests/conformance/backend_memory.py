"""The in-process result backend under the conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.backends.base import BackendOptions
from celeriac.backends.memory import MemoryBackend

NAME = "memory"


def make_backend(
    tmp_path: Path, request: pytest.FixtureRequest, options: BackendOptions
) -> MemoryBackend:
    # The test's temporary directory names a store of its own.
    return MemoryBackend(f"memory://conformance{tmp_path}", options)
