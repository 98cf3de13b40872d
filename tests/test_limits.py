"""The ``message_max_*`` and ``result_max_size`` settings reach what they bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from celeriac import Celery, states
from celeriac.exceptions import BackendStoreError
from celeriac.protocol.limits import Limits
from celeriac.protocol.results import build_meta

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
]


def backend_url(kind: str, tmp_path: Path) -> str:
    return {
        "memory": "cache+memory://",
        "sqlite": f"db+sqlite:///{tmp_path}/results.db",
        "redis": "redis://127.0.0.1:6379/5",
    }[kind]


def test_settings_become_the_limits_of_transports_and_backends() -> None:
    app = Celery(broker="memory://", backend="cache+memory://")
    app.conf.update(
        message_max_size=1000,
        message_max_decompressed_size=2000,
        message_max_depth=30,
        result_max_size=4000,
    )
    assert app.limits() == Limits(1000, 2000, 30, 4000)
    transport = app.create_transport()
    try:
        assert transport.options.limits == app.limits()  # type: ignore[attr-defined]
    finally:
        transport.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_result_over_result_max_size_is_stored_as_a_failure_that_says_so(
    kind: str, tmp_path: Path
) -> None:
    app = Celery(broker="memory://", backend=backend_url(kind, tmp_path))
    app.conf.result_max_size = 10_000
    small = build_meta("small-result", states.SUCCESS, "x" * 100)
    big = build_meta("big-result", states.SUCCESS, "x" * 20_000)
    try:
        app.backend.store([small, big])

        assert app.AsyncResult("small-result").get(timeout=5) == "x" * 100
        with pytest.raises(BackendStoreError, match="result_max_size"):
            app.AsyncResult("big-result").get(timeout=5)
    finally:
        app.backend.forget(["small-result", "big-result"])
        app.close()
