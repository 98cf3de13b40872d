"""The SQLite result backend under the conformance suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac.backends.base import BackendOptions
from celeriac.backends.sqlite import SQLiteBackend

NAME = "sqlite"


def make_backend(
    tmp_path: Path, request: pytest.FixtureRequest, options: BackendOptions
) -> SQLiteBackend:
    # Four slashes: an absolute path, as in SQLAlchemy URLs.
    return SQLiteBackend(f"db+sqlite:///{tmp_path / 'results.db'}", options)
